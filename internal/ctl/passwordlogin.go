package ctl

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

// tokenFromPassword trades a user's name and password for a bearer token
// with the user's role (POST /auth/token), so the CLI keeps to tokens and
// never stores a password.
func tokenFromPassword(ctx context.Context, server, username, password, ttl, caFile string, insecure bool) (string, error) {
	hc, err := rawHTTPClient(caFile, insecure)
	if err != nil {
		return "", fmt.Errorf("log in: %w", err)
	}
	defer hc.CloseIdleConnections()
	body, _ := json.Marshal(map[string]string{"username": username, "password": password, "ttl": ttl})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(server, "/")+"/auth/token", bytes.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("log in to %s: %w", server, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "kakuremichictl")
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("log in to %s: %w", server, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", fmt.Errorf("log in to %s: %w", server, err)
	}
	if resp.StatusCode != http.StatusCreated {
		var st api.Status
		if json.Unmarshal(data, &st) != nil || st.Message == "" {
			return "", fmt.Errorf("log in to %s: the server answered %s", server, resp.Status)
		}
		msg := st.Message
		if ra := resp.Header.Get("Retry-After"); ra != "" && resp.StatusCode == http.StatusTooManyRequests {
			msg = fmt.Sprintf("%s (retry after %s s)", msg, ra)
		}
		return "", fmt.Errorf("log in to %s: %w", server, &api.StatusError{Status: api.Status{Code: st.Code, Reason: st.Reason, Message: msg}})
	}
	var out struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(data, &out); err != nil || out.Token == "" {
		return "", fmt.Errorf("log in to %s: the server answered without a token", server)
	}
	return out.Token, nil
}

// rawHTTPClient is an HTTP client with the CLI's TLS settings, for the
// /auth endpoints the API client does not cover.
func rawHTTPClient(caFile string, insecure bool) (*http.Client, error) {
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure} //nolint:gosec // the user asked for it
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
		}
		tlsConf.RootCAs = pool
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsConf
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, nil
}

// statusError turns an error answer of the API into an error.
func statusError(op string, resp *http.Response, data []byte) error {
	var st api.Status
	if json.Unmarshal(data, &st) != nil || st.Message == "" {
		return fmt.Errorf("%s: the server answered %s", op, resp.Status)
	}
	return fmt.Errorf("%s: %w", op, &api.StatusError{Status: api.Status{Code: st.Code, Reason: st.Reason, Message: st.Message}})
}

// readPassword reads one line from in; on a terminal it prompts on
// prompt and turns echo off while the password is typed.
func readPassword(in io.Reader, prompt io.Writer) (string, error) {
	if f, ok := in.(*os.File); ok {
		if restore, err := noEcho(f); err == nil {
			fmt.Fprint(prompt, "Password: ")
			defer func() {
				restore()
				fmt.Fprintln(prompt)
			}()
		}
	}
	line, err := bufio.NewReader(io.LimitReader(in, 64<<10)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read password: %w", err)
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return "", usagef("no password given: type it, or pass it on stdin")
	}
	return pw, nil
}
