// Package agent renders the Vault Agent configuration that feeds ticketkeys windows to nginx, HAProxy and
// Envoy: AppRole auto-auth, and one template set per server kind that reads
// `<mount>/keys/<keyring>?format=<kind>` and writes the window in that server's layout.
//
// The rendered templates contain only bytes that change with the window (key material, ids, states; never
// ttl or request ids), so Vault Agent rewrites a file, and runs its command, once per window change and
// never when it re-reads an unchanged window. The files in examples/ are the output for DefaultParams and
// are kept equal to it by a test; cmd/ticketkeys-agent-config renders other parameters.
//
// One Agent should render one format of a keyring: consul-template identifies a `secret` dependency by its
// path without the query string, so two templates reading the same keyring with two formats in one Agent
// would share one response.
//
// What it does not do: install files, create the AppRole role or policy in Vault (see docs/<kind>.md and
// Policy), or configure the servers themselves (docs/<kind>.md has the server lines).
package agent

import (
	"bytes"
	"embed"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"text/template"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/vaultclient"
)

// Kind is a server kind with its own template set.
type Kind string

const (
	// Nginx renders one raw key file per slot and an ssl_session_ticket_key include snippet; the command
	// (a reload) runs once per window change.
	Nginx Kind = "nginx"
	// HAProxy renders the tls-ticket-keys file; the command pushes it to the running HAProxy.
	HAProxy Kind = "haproxy"
	// Envoy renders an SDS file with a session_ticket_keys Secret.
	Envoy Kind = "envoy"
)

// Kinds lists every supported kind.
var Kinds = []Kind{Nginx, HAProxy, Envoy}

// MaxSlots bounds Params.Slots: the engine's window is small (current, next, previous keys), and every slot
// is one file nginx reads at each reload.
const MaxSlots = 16

// Params are the values the rendered configuration depends on. Zero values take the documented defaults
// (see DefaultParams) when passed to Render.
type Params struct {
	// VaultAddr is Vault's address. If empty, "https://vault.example.com:8200". Plain http:// is refused
	// except to a loopback address unless InsecureHTTP.
	VaultAddr string
	// InsecureHTTP allows a plain http:// VaultAddr that is not a loopback address: Agent's token and the
	// keys then travel in clear. Set it only from an explicit flag.
	InsecureHTTP bool
	// CACert is a PEM file to verify Vault's certificate. If empty, the system roots.
	CACert string
	// Mount is the engine's mount path without slashes. If empty, "ticketkeys".
	Mount string
	// Keyring is the keyring name. If empty, "web".
	Keyring string
	// RoleIDFile and SecretIDFile hold the AppRole credentials. If empty, /etc/vault-agent/ticketkeys/role-id
	// and .../secret-id.
	RoleIDFile, SecretIDFile string
	// SecretIDWrappingPath, when set, makes SecretIDFile a response-wrapping token that Agent unwraps,
	// accepting it only if it wrapped a response of this path (node-approle.sh -w writes one for
	// "auth/approle/role/ticketkeys-NODE/secret-id"). If empty, SecretIDFile holds the secret_id itself.
	SecretIDWrappingPath string
	// TokenSink is a file Agent writes its token to. If empty, Agent keeps the token in memory only (no sink):
	// the templates need no token on disk.
	TokenSink string
	// PIDFile is Agent's pid file. If empty, none.
	PIDFile string
	// Dir is where the rendered files go. If empty, /etc/nginx/ticketkeys, /etc/haproxy/ticketkeys or
	// /etc/envoy/ticketkeys by kind.
	Dir string
	// Slots is the number of nginx key files (ssl_session_ticket_key lines), 1..MaxSlots. If zero, 4.
	// A window with fewer keys repeats the current key in the unused slots (harmless: nginx decrypts with
	// the first key whose name matches); a window with more keys loses its oldest previous keys, whose
	// tickets then fall back to a full handshake. Size it as 1 + next keys + previous keys: with the
	// default publish_ahead (= rotation_period) that is 2 + ceil(retain / rotation_period).
	Slots int
	// Command runs after the files change (once per change, after all files are written). If nil:
	// nginx ["nginx", "-s", "reload"]; HAProxy ["/usr/local/bin/ticketkeys-haproxy-push", "-socket",
	// "/run/haproxy/admin.sock", "-pidfile", "/run/haproxy.pid" (Debian's unit), "-file", <Dir>/tls-ticket-keys];
	// Envoy none (Envoy watches the file).
	// A non-nil empty slice means no command.
	Command []string
	// SecretName is the Envoy SDS secret name. If empty, "session_ticket_keys".
	SecretName string
}

// DefaultParams returns the parameters examples/ are rendered with: every field at its default.
func DefaultParams() Params { return Params{} }

// view is what the templates see.
type view struct {
	Params
	Kind     Kind
	Format   string
	SlotList []int
}

//go:embed templates/*.hcl.tmpl
var templateFS embed.FS

var templates = template.Must(template.New("").Delims("[[", "]]").Funcs(template.FuncMap{
	"q":    hclString,
	"list": hclList,
}).ParseFS(templateFS, "templates/*.hcl.tmpl"))

// SecretPath is the path the templates read, with the format query.
func (v view) SecretPath() string {
	return fmt.Sprintf("%s/keys/%s?format=%s", v.Mount, v.Keyring, v.Format)
}

// KeyFile is the nginx key file of a slot.
func (v view) KeyFile(slot int) string {
	return filepath.Join(v.Dir, fmt.Sprintf("%s.%d.key", v.Keyring, slot))
}

// SnippetFile is the nginx include snippet.
func (v view) SnippetFile() string { return filepath.Join(v.Dir, v.Keyring+".ticket-keys.conf") }

// KeysFile is the HAProxy tls-ticket-keys file.
func (v view) KeysFile() string { return filepath.Join(v.Dir, v.Keyring+".tls-ticket-keys") }

// ScheduleFile is the HAProxy schedule file: every key of the window with its times, the input of
// ticketkeys-haproxy-push -at-schedule.
func (v view) ScheduleFile() string { return filepath.Join(v.Dir, v.Keyring+".schedule") }

// SDSFile is the Envoy SDS file.
func (v view) SDSFile() string { return filepath.Join(v.Dir, v.Keyring+".sds.json") }

var (
	keyringName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)
	mountPath   = regexp.MustCompile(`^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$`)
)

// withDefaults fills zero fields and validates the result.
func withDefaults(kind Kind, p Params) (view, error) {
	v := view{Params: p, Kind: kind, Format: string(kind)}
	if v.VaultAddr == "" {
		v.VaultAddr = "https://vault.example.com:8200"
	}
	if err := vaultclient.CheckAddress("vault address", v.VaultAddr, v.InsecureHTTP); err != nil {
		return v, err
	}
	if v.Mount == "" {
		v.Mount = "ticketkeys"
	}
	if v.Keyring == "" {
		v.Keyring = "web"
	}
	if v.RoleIDFile == "" {
		v.RoleIDFile = "/etc/vault-agent/ticketkeys/role-id"
	}
	if v.SecretIDFile == "" {
		v.SecretIDFile = "/etc/vault-agent/ticketkeys/secret-id"
	}
	if v.Slots == 0 {
		v.Slots = 4
	}
	if v.SecretName == "" {
		v.SecretName = "session_ticket_keys"
	}
	switch kind {
	case Nginx, HAProxy, Envoy:
	default:
		return v, fmt.Errorf("kind %q: want one of nginx, haproxy, envoy", kind)
	}
	if v.Dir == "" {
		v.Dir = "/etc/" + string(kind) + "/ticketkeys"
	}
	if v.Command == nil {
		switch kind {
		case Nginx:
			v.Command = []string{"nginx", "-s", "reload"}
		case HAProxy:
			v.Command = []string{"/usr/local/bin/ticketkeys-haproxy-push", "-socket", "/run/haproxy/admin.sock", "-pidfile", "/run/haproxy.pid", "-file", v.KeysFile()}
		}
	}
	if !keyringName.MatchString(v.Keyring) {
		return v, fmt.Errorf("keyring %q: want 1-128 characters of A-Z a-z 0-9 _ - ., starting with a letter or digit", v.Keyring)
	}
	if !mountPath.MatchString(v.Mount) {
		return v, fmt.Errorf("mount %q: want a path without leading or trailing slash", v.Mount)
	}
	if v.Slots < 1 || v.Slots > MaxSlots {
		return v, fmt.Errorf("slots %d: want 1..%d", v.Slots, MaxSlots)
	}
	if !filepath.IsAbs(v.Dir) {
		return v, fmt.Errorf("dir %q: want an absolute path (Agent and the server may run in different directories)", v.Dir)
	}
	if !safeName.MatchString(v.SecretName) {
		return v, fmt.Errorf("secret name %q: want letters, digits, _ - . only", v.SecretName)
	}
	// Paths end up inside nginx directives and consul-template strings: keep them plain.
	for field, s := range map[string]string{"dir": v.Dir, "role_id_file": v.RoleIDFile, "secret_id_file": v.SecretIDFile, "token_sink": v.TokenSink, "pid_file": v.PIDFile, "ca_cert": v.CACert} {
		if strings.ContainsAny(s, "\"';{}$\\ \t\r\n`") {
			return v, fmt.Errorf("%s %q: must not contain quotes, spaces, ';', '{', '}', '$', '`' or backslashes", field, s)
		}
	}
	for i := 0; i < v.Slots; i++ {
		v.SlotList = append(v.SlotList, i)
	}
	return v, nil
}

var safeName = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// Render returns the complete Vault Agent configuration (HCL) for one server kind.
func Render(kind Kind, p Params) (string, error) {
	v, err := withDefaults(kind, p)
	if err != nil {
		return "", fmt.Errorf("agent config: %w", err)
	}
	var b bytes.Buffer
	if err := templates.ExecuteTemplate(&b, "base.hcl.tmpl", v); err != nil {
		return "", fmt.Errorf("agent config: base: %w", err)
	}
	if err := templates.ExecuteTemplate(&b, string(kind)+".hcl.tmpl", v); err != nil {
		return "", fmt.Errorf("agent config: %s templates: %w", kind, err)
	}
	return b.String(), nil
}

// Files returns the paths the configuration for kind writes, in the order the templates appear: nginx key
// files by slot then the snippet; HAProxy's keys file; Envoy's SDS file.
func Files(kind Kind, p Params) ([]string, error) {
	v, err := withDefaults(kind, p)
	if err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	switch kind {
	case Nginx:
		var out []string
		for _, s := range v.SlotList {
			out = append(out, v.KeyFile(s))
		}
		return append(out, v.SnippetFile()), nil
	case HAProxy:
		return []string{v.KeysFile()}, nil
	default:
		return []string{v.SDSFile()}, nil
	}
}

// Policy returns the Vault policy a node needs: read on the keyring, in every format, and nothing else.
// (A write to the same path would reach the keyring's update handler, so it is not granted.)
func Policy(p Params) (string, error) {
	v, err := withDefaults(Nginx, p)
	if err != nil {
		return "", fmt.Errorf("agent policy: %w", err)
	}
	return fmt.Sprintf(`# Vault policy for a node that feeds keyring %q to its TLS servers through Vault Agent.
# Read only: the window in any format. No update (that path's write changes the keyring's settings),
# no rotate, no history, no list.
path %s {
  capabilities = ["read"]
}
`, v.Keyring, hclString(v.Mount+"/keys/"+v.Keyring)), nil
}

// hclString quotes s as an HCL string (the paths and arguments we quote are plain ASCII).
func hclString(s string) string { return strconv.Quote(s) }

// hclList renders a list of HCL strings.
func hclList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = hclString(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
