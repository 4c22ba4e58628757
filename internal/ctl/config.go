package ctl

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/kakuremichi/kakuremichi/api/client"
)

// Environment variables read by kakuremichictl.
const (
	envServer   = "KAKUREMICHI_SERVER"
	envToken    = "KAKUREMICHI_TOKEN"
	envCAFile   = "KAKUREMICHI_CA_FILE"
	envInsecure = "KAKUREMICHI_INSECURE_SKIP_TLS_VERIFY"
	envConfig   = "KAKUREMICHI_CONFIG"
)

// fileConfig is the config file written by login.
type fileConfig struct {
	// Server is Control's URL.
	Server string `json:"server"`
	// Token is the bearer token for Server.
	Token string `json:"token,omitempty"`
	// CAFile is the CA that signed Server's certificate.
	CAFile string `json:"caFile,omitempty"`
	// InsecureSkipTLSVerify accepts any certificate from Server.
	InsecureSkipTLSVerify bool `json:"insecureSkipTLSVerify,omitempty"`
}

// configPath returns the config file's path: --config, then
// KAKUREMICHI_CONFIG, then kakuremichi/config.yaml in the user's config
// directory ($XDG_CONFIG_HOME, or ~/.config).
func (c *cli) configPath() (string, error) {
	if c.global.configPath != "" {
		return c.global.configPath, nil
	}
	if p, ok := c.lookupEnv(envConfig); ok && p != "" {
		return p, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("find the config directory: %w (use --config)", err)
	}
	return filepath.Join(dir, "kakuremichi", "config.yaml"), nil
}

// loadConfig reads the config file; a missing one is an empty config.
func (c *cli) loadConfig() (fileConfig, string, error) {
	path, err := c.configPath()
	if err != nil {
		return fileConfig{}, "", err
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fileConfig{}, path, nil
	}
	if err != nil {
		return fileConfig{}, path, fmt.Errorf("read config: %w", err)
	}
	var cfg fileConfig
	if err := yaml.UnmarshalStrict(data, &cfg); err != nil {
		return fileConfig{}, path, fmt.Errorf("read config %s: %w", path, err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 && cfg.Token != "" {
		fmt.Fprintf(c.stderr, "warning: %s holds a token but is readable by others (mode %04o); run chmod 600 %s\n",
			path, fi.Mode().Perm(), path)
	}
	return cfg, path, nil
}

// saveConfig writes cfg atomically, readable only by the user.
func saveConfig(path string, cfg fileConfig) error {
	data, err := yaml.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".config-*.yaml")
	if err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("save config: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("save config: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("save config: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	return nil
}

// env returns a non-empty environment variable.
func (c *cli) env(name string) string {
	v, _ := c.lookupEnv(name)
	return v
}

// sameServer compares URLs as a person writes them.
func sameServer(a, b string) bool {
	return strings.TrimSuffix(a, "/") == strings.TrimSuffix(b, "/")
}

// readTokenFile returns the token in a file, without surrounding space.
func readTokenFile(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" {
		return "", fmt.Errorf("read token file: %s is empty", path)
	}
	return tok, nil
}

// connection resolves where Control is and which token to present:
// flags first, then the environment, then the config file. The config
// file's token and CA are used only for the config file's server, so a
// --server pointing elsewhere never receives the saved token.
func (c *cli) connection() (client.Config, error) {
	file, path, err := c.loadConfig()
	if err != nil {
		return client.Config{}, err
	}
	cfg := client.Config{UserAgent: "kakuremichictl"}
	switch {
	case c.global.server != "":
		cfg.Server = c.global.server
	case c.env(envServer) != "":
		cfg.Server = c.env(envServer)
	default:
		cfg.Server = file.Server
	}
	if cfg.Server == "" {
		return client.Config{}, fmt.Errorf("no server given: run \"kakuremichictl login --server URL\", or use --server or %s", envServer)
	}
	fromFile := file.Server != "" && sameServer(file.Server, cfg.Server)
	switch {
	case c.global.token != "":
		cfg.Token = c.global.token
	case c.global.tokenFile != "":
		if cfg.Token, err = readTokenFile(c.global.tokenFile); err != nil {
			return client.Config{}, err
		}
	case c.env(envToken) != "":
		cfg.Token = c.env(envToken)
	case fromFile:
		cfg.Token = file.Token
	}
	if cfg.Token == "" {
		hint := "run \"kakuremichictl login\""
		if file.Server != "" && !fromFile {
			hint = fmt.Sprintf("the token saved in %s is for %s, not %s", path, file.Server, cfg.Server)
		}
		return client.Config{}, fmt.Errorf("no token for %s: use --token-file or %s (%s)", cfg.Server, envToken, hint)
	}
	switch {
	case c.global.caFile != "":
		cfg.CAFile = c.global.caFile
	case c.env(envCAFile) != "":
		cfg.CAFile = c.env(envCAFile)
	case fromFile:
		cfg.CAFile = file.CAFile
	}
	insecure, err := c.insecure()
	if err != nil {
		return client.Config{}, err
	}
	cfg.InsecureSkipVerify = insecure || (fromFile && file.InsecureSkipTLSVerify)
	return cfg, nil
}

func (c *cli) insecure() (bool, error) {
	if c.global.insecure {
		return true, nil
	}
	v := c.env(envInsecure)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%s=%q is not true or false", envInsecure, v)
	}
	return b, nil
}

// client returns a client for the resolved connection.
func (c *cli) client() (*client.Client, error) {
	cfg, err := c.connection()
	if err != nil {
		return nil, err
	}
	return c.newClient(cfg)
}

// newClient makes a client that is released when the run ends.
func (c *cli) newClient(cfg client.Config) (*client.Client, error) {
	cl, err := client.New(cfg)
	if err != nil {
		return nil, err
	}
	c.clients = append(c.clients, cl)
	return cl, nil
}
