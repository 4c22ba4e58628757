package ctl

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/api/client"
	"github.com/kakuremichi/kakuremichi/internal/buildinfo"
)

// runLogin checks a token against /version and saves it with the server
// in the config file.
func runLogin(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlagSet("login")
	var username, ttl string
	fs.StringVar(&username, "username", "", "log in as this user: the password is read from the terminal or stdin, and traded for a token")
	fs.StringVar(&ttl, "ttl", "", "with --username: how long the token lives, such as 720h (default and most: 90 days)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("login takes no arguments, got %q", pos)
	}
	file, path, err := c.loadConfig()
	if err != nil {
		return err
	}
	server := c.global.server
	if server == "" {
		server = c.env(envServer)
	}
	if server == "" {
		server = file.Server
	}
	if server == "" {
		return usagef("login needs --server URL")
	}
	var token string
	switch {
	case username != "" && (c.global.token != "" || c.global.tokenFile != ""):
		return usagef("give either --username or a token, not both")
	case username != "":
		// Handled below, once TLS settings are known.
	case ttl != "":
		return usagef("--ttl goes with --username")
	case c.global.token != "" && c.global.tokenFile != "":
		return usagef("give either --token or --token-file, not both")
	case c.global.token != "":
		token = c.global.token
	case c.global.tokenFile != "":
		if token, err = readTokenFile(c.global.tokenFile); err != nil {
			return err
		}
	default:
		if f, ok := c.stdin.(*os.File); ok {
			if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
				fmt.Fprint(c.stderr, "Token: ")
			}
		}
		line, err := bufio.NewReader(io.LimitReader(c.stdin, 64<<10)).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read token from stdin: %w", err)
		}
		token = strings.TrimSpace(line)
		if token == "" {
			return usagef("no token given: pass --token-file FILE, or the token on stdin")
		}
	}
	insecure, err := c.insecure()
	if err != nil {
		return err
	}
	caFile := c.global.caFile
	if caFile == "" {
		caFile = c.env(envCAFile)
	}
	if username != "" {
		password, err := readPassword(c.stdin, c.stderr)
		if err != nil {
			return err
		}
		if token, err = tokenFromPassword(ctx, server, username, password, ttl, caFile, insecure); err != nil {
			return err
		}
	}
	cl, err := c.newClient(client.Config{Server: server, Token: token, CAFile: caFile, InsecureSkipVerify: insecure, UserAgent: "kakuremichictl"})
	if err != nil {
		return err
	}
	v, err := cl.Version(ctx)
	if errors.Is(err, api.ErrUnauthorized) {
		return fmt.Errorf("log in to %s: the server refused the token: %w", server, err)
	}
	if err != nil {
		return fmt.Errorf("log in to %s: %w", server, err)
	}
	cfg := fileConfig{Server: strings.TrimSuffix(server, "/"), Token: token, CAFile: caFile, InsecureSkipTLSVerify: insecure}
	if err := saveConfig(path, cfg); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "Logged in to %s (Control %s); saved in %s\n", cfg.Server, v.Version, path)
	return nil
}

// runVersion prints the client's version and, when a server is
// configured, the server's.
func runVersion(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlagSet("version")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("version takes no arguments")
	}
	fmt.Fprintf(c.stdout, "Client: %s\n", versionString(buildinfo.Version(), buildinfo.Commit()))
	cfg, err := c.connection()
	if err != nil {
		fmt.Fprintf(c.stderr, "(no server version: %v)\n", err)
		return nil
	}
	cl, err := c.newClient(cfg)
	if err != nil {
		return err
	}
	v, err := cl.Version(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "Server: %s (%s)\n", versionString(v.Version, v.Commit), cfg.Server)
	return nil
}

func versionString(version, commit string) string {
	if commit == "" {
		return version
	}
	return version + " (commit " + commit + ")"
}

// runCreate creates the objects whose secret Control generates and shows
// once (tokens and API keys), printing the secret alone on stdout. Every
// other kind is created by apply.
func runCreate(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlagSet("create")
	var role, expires, description string
	var maxUses int64
	fs.StringVar(&role, "role", "", "tokens: admin, editor or viewer; API keys: agent or gateway (required)")
	fs.StringVar(&expires, "expires", "", `lifetime such as 720h or 30d; empty never expires`)
	fs.StringVar(&description, "description", "", "who or what it is for")
	fs.Int64Var(&maxUses, "max-uses", 0, "API keys: how many nodes the key may enrol; 0 is no limit")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("create what? \"create token NAME\" or \"create apikey NAME\"; other objects are created with apply -f")
	}
	k, ok := api.LookupKind(pos[0])
	if !ok || (k.Kind != "Token" && k.Kind != "APIKey") {
		return usagef("create makes only tokens and API keys; create %s objects with apply -f", pos[0])
	}
	if len(pos) != 2 {
		return usagef("create %s takes exactly one NAME", k.Singular)
	}
	name := pos[1]
	if role == "" {
		return usagef("--role is required")
	}
	var expiresAt *time.Time
	if expires != "" {
		d, err := parseLifetime(expires)
		if err != nil {
			return usagef("--expires: %v", err)
		}
		at := c.now().Add(d).UTC().Truncate(time.Second)
		expiresAt = &at
	}
	var obj api.Object
	switch k.Kind {
	case "Token":
		switch api.Role(role) {
		case api.RoleAdmin, api.RoleEditor, api.RoleViewer:
		default:
			return usagef("--role %q: a token is admin, editor or viewer (nodes get theirs by enrolling with an API key)", role)
		}
		if maxUses != 0 {
			return usagef("--max-uses is for API keys")
		}
		obj = &api.Token{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: k.Kind},
			Metadata: api.ObjectMeta{Name: name},
			Spec:     api.TokenSpec{Role: api.Role(role), ExpiresAt: expiresAt, Description: description}}
	case "APIKey":
		obj = &api.APIKey{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: k.Kind},
			Metadata: api.ObjectMeta{Name: name},
			Spec:     api.APIKeySpec{Role: api.Role(role), ExpiresAt: expiresAt, MaxUses: maxUses, Description: description}}
	}
	if err := api.Validate(obj); err != nil {
		return fmt.Errorf("create %s %q: %w", k.Singular, name, err)
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	out, err := cl.Create(ctx, obj, client.WriteOptions{})
	if err != nil {
		return err
	}
	sh, ok := out.(api.SecretHolder)
	var secret string
	if ok {
		_, shown := sh.Secrets()
		secret = *shown
	}
	if secret == "" {
		return fmt.Errorf("create %s %q: the server answered without a secret; delete it and try again", k.Singular, name)
	}
	until := "never expires"
	if expiresAt != nil {
		until = "expires " + expiresAt.Format(time.RFC3339)
	}
	fmt.Fprintf(c.stderr, "%s created (role %s, %s).\nIts secret is printed on stdout and shown only this once: store it now.\n",
		ref(out), role, until)
	fmt.Fprintln(c.stdout, secret)
	return nil
}

// parseLifetime accepts Go durations and whole days ("30d").
func parseLifetime(s string) (time.Duration, error) {
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n int
		if _, err := fmt.Sscanf(days, "%d", &n); err != nil || fmt.Sprint(n) != days {
			return 0, fmt.Errorf("%q is not a number of days", s)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("%q is not a duration such as 720h or 30d", s)
		}
	}
	if d <= 0 {
		return 0, fmt.Errorf("%q is not a positive duration", s)
	}
	return d, nil
}
