package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/api/client"
	"github.com/kakuremichi/kakuremichi/internal/flagenv"
	"github.com/kakuremichi/kakuremichi/internal/securefile"
)

// initKey is one API key `init-keys` makes: its object name, the role it
// enrols and the file its secret goes to.
type initKey struct {
	name string
	role api.Role
	file string
}

// runInitKeys is the one-shot step of the compose deployment: with the
// bootstrap token Control wrote into its data directory, it creates the
// gateway and agent API keys and writes them into files the nodes read
// (--api-key-file), so no secret is ever written in the compose file. The
// image has no shell, so this cannot be a script around kakuremichictl.
// Keys whose file already exists are left alone: running it again after
// the first start changes nothing and needs no token.
func runInitKeys(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("kakuremichi init-keys", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var controlURL, tokenFile, outDir, gatewayKey, agentKey string
	var wait time.Duration
	var lf logFlags
	fs.StringVar(&controlURL, "control-url", os.Getenv("CONTROL_URL"), "Control's URL (env CONTROL_URL)")
	fs.StringVar(&tokenFile, "token-file", "/data/bootstrap-token", "admin token to create the keys with: Control's bootstrap token")
	fs.StringVar(&outDir, "out", "/keys", "directory the key files are written to (gateway.key, agent.key, mode 0600)")
	fs.StringVar(&gatewayKey, "gateway-key", "compose-gateways", "name of the gateways' API key")
	fs.StringVar(&agentKey, "agent-key", "compose-agents", "name of the agents' API key")
	fs.DurationVar(&wait, "wait", 2*time.Minute, "how long to wait for Control and its token file")
	lf.Register(fs)
	fs.Usage = flagenv.Usage(fs, envPrefix, "Usage: CONTROL_URL=... kakuremichi init-keys [flags]\n\nCreates the gateway and agent API keys of a compose deployment into files, once.")
	if err := flagenv.Parse(fs, envPrefix, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "error: %v\n", err)
		return 2
	}
	if fs.NArg() > 0 || controlURL == "" {
		fmt.Fprintln(stderr, "error: init-keys takes no arguments and needs CONTROL_URL or --control-url")
		return 2
	}
	log, err := lf.Logger(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return 2
	}
	keys := []initKey{
		{name: gatewayKey, role: api.RoleGateway, file: filepath.Join(outDir, "gateway.key")},
		{name: agentKey, role: api.RoleAgent, file: filepath.Join(outDir, "agent.key")},
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := initKeys(ctx, log, controlURL, tokenFile, keys); err != nil {
		log.Error("init-keys", "err", err)
		return 1
	}
	return 0
}

func initKeys(ctx context.Context, log *slog.Logger, controlURL, tokenFile string, keys []initKey) error {
	var missing []initKey
	for _, k := range keys {
		if data, err := os.ReadFile(k.file); err == nil && len(strings.TrimSpace(string(data))) > 0 {
			log.Info("key file exists; left alone", "file", k.file)
			continue
		}
		missing = append(missing, k)
	}
	if len(missing) == 0 {
		return nil
	}
	token, err := waitForFile(ctx, tokenFile)
	if err != nil {
		return fmt.Errorf("read the admin token: %w", err)
	}
	cl, err := client.New(client.Config{Server: controlURL, Token: token, Timeout: 10 * time.Second})
	if err != nil {
		return err
	}
	defer cl.CloseIdleConnections()
	if err := waitReady(ctx, controlURL); err != nil {
		return err
	}
	for _, k := range missing {
		secret, err := createKey(ctx, cl, k)
		if err != nil {
			return err
		}
		if err := securefile.Write(k.file, []byte(secret+"\n")); err != nil {
			return fmt.Errorf("write API key %s: %w", k.name, err)
		}
		log.Info("API key created", "name", k.name, "role", k.role, "file", k.file)
	}
	return nil
}

// createKey creates the API key and returns its secret. A key of that name
// whose file is gone is useless (its secret is shown only once), so it is
// replaced; nodes it enrolled keep their own credentials.
func createKey(ctx context.Context, cl *client.Client, k initKey) (string, error) {
	obj := &api.APIKey{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "APIKey"},
		Metadata: api.ObjectMeta{Name: k.name},
		Spec:     api.APIKeySpec{Role: k.role, Description: "created by kakuremichi init-keys for docker compose"}}
	out, err := cl.Create(ctx, obj, client.WriteOptions{})
	if errors.Is(err, api.ErrAlreadyExists) {
		if _, err := cl.Delete(ctx, "APIKey", k.name, client.DeleteOptions{}); err != nil && !errors.Is(err, api.ErrNotFound) {
			return "", fmt.Errorf("replace API key %s: %w", k.name, err)
		}
		out, err = cl.Create(ctx, obj, client.WriteOptions{})
	}
	if err != nil {
		return "", fmt.Errorf("create API key %s: %w", k.name, err)
	}
	key, ok := out.(*api.APIKey)
	if !ok || key.Status.Secret == "" {
		return "", fmt.Errorf("create API key %s: Control answered no secret", k.name)
	}
	return key.Status.Secret, nil
}

// waitForFile returns the trimmed content of path once it exists: Control
// writes its bootstrap token a moment after it starts.
func waitForFile(ctx context.Context, path string) (string, error) {
	for {
		data, err := os.ReadFile(path)
		if err == nil && len(strings.TrimSpace(string(data))) > 0 {
			return strings.TrimSpace(string(data)), nil
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%s did not appear: %w", path, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// waitReady polls Control's /readyz until it answers 200.
func waitReady(ctx context.Context, controlURL string) error {
	u := strings.TrimSuffix(controlURL, "/") + "/readyz"
	hc := &http.Client{Timeout: 5 * time.Second}
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return fmt.Errorf("wait for Control: %w", err)
		}
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s answered %s", u, resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for Control: %w (last: %v)", ctx.Err(), last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}
