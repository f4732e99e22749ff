# Vault Agent for ticketkeys, nginx with resty.ticketkeys (no reload): keyring "web" at ticketkeys/.
# See docs/nginx-lua.md. Agent logs in with AppRole, reads ticketkeys/keys/web?format=nginx, re-reads it
# right after each window change (the response carries rotation_period and an integer ttl), and rewrites
# the window file atomically only when the rendered bytes change. No command runs: every nginx worker
# polls the file (default every second) and installs a changed window itself.

vault {
  address = "https://vault.example.com:8200"
  # ca_cert = "/etc/vault-agent/ticketkeys/vault-ca.pem"   (install.sh -c CA_FILE: a private CA; default: the system roots)
  # A failed read (Vault answering 500 during an election or a restore) is retried, at most max_backoff
  # apart (auto_auth below), 120 times: about 10 minutes before Agent restarts its template runner after a
  # pause that doubles at each restart up to 5 minutes. Default: 12 retries, about 43 s here.
  retry {
    num_retries = 120
  }
}

auto_auth {
  method "approle" {
    mount_path = "auth/approle"
    # Agent 1.21 also caps its template reads' retry backoff (250 ms doubling) with max_backoff: without it
    # the cap is 1 minute, and a read failing through an election waited 16 s, then 32 s, before the next
    # try. With 5 s, a node reads the window at most 5 s after Vault answers again (publish_ahead covers the
    # outage plus that); a fleet of N nodes then sends about N/5 failing reads a second while Vault is down.
    max_backoff = "5s"
    config = {
      role_id_file_path                   = "/etc/vault-agent/ticketkeys/role-id"
      secret_id_file_path                 = "/etc/vault-agent/ticketkeys/secret-id"
      remove_secret_id_file_after_reading = false
    }
  }
}

template_config {
  # Keep retrying while Vault is unreachable: the workers keep the window they have.
  exit_on_retry_failure = false
}

template {
  source               = "/etc/vault-agent/ticketkeys/window.ctmpl"
  destination          = "/var/lib/ticketkeys/nginx/web.window"
  # The workers (www-data) read this file through their group: the directory is AGENT_USER:www-data 2750
  # (setgid, so the file Agent creates gets the group), and no one else reads it. It is the only
  # directory Agent writes: nginx's configuration and placeholder stay root's.
  perms                = "0640"
  error_on_missing_key = true
}
