# Vault Agent for ticketkeys, nginx with resty.ticketkeys (no reload): keyring "web" at ticketkeys/.
# See docs/nginx-lua.md. Agent logs in with AppRole, reads ticketkeys/keys/web?format=nginx, re-reads it
# right after each window change (the response carries rotation_period and an integer ttl), and rewrites
# the window file atomically only when the rendered bytes change. No command runs: every nginx worker
# polls the file (default every second) and installs a changed window itself.

vault {
  address = "https://vault.example.com:8200"
}

auto_auth {
  method "approle" {
    mount_path = "auth/approle"
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
  destination          = "/etc/nginx/ticketkeys/web.window"
  # The workers (www-data) read this file. The directory is root:www-data 0750, so 0644 here exposes the
  # file to root and the www-data group only (Agent creates files as its own user and group).
  perms                = "0644"
  error_on_missing_key = true
}
