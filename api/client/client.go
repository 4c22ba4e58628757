// Package client is the Go client of Control's REST API
// (/apis/kakuremichi.io/v1alpha1/...): get, list, create, update, patch,
// update status, delete and watch objects of every kind, with bearer-token
// authentication. Errors the API answers with come back as *api.StatusError,
// so errors.Is(err, api.ErrNotFound) and the other sentinels of package api
// work on them.
//
// It is used by kakuremichictl and by anything else that talks to Control
// over HTTP, so it imports only the standard library, package api and
// sigs.k8s.io/yaml.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

// Config says where Control is and how to authenticate to it.
type Config struct {
	// Server is Control's base URL, e.g. https://control.example.com:8443.
	// A path is kept as a prefix (for a reverse proxy). Required.
	Server string
	// Token is the bearer token sent with every request. Empty sends no
	// Authorization header, which only /healthz and /readyz accept.
	Token string
	// HTTPClient makes the requests. Nil builds one from CAFile and
	// InsecureSkipVerify; when set, those two must be left empty.
	HTTPClient *http.Client
	// CAFile is a PEM file of the certificate authorities trusted for
	// Control's certificate, instead of the system's. Empty trusts the
	// system's.
	CAFile string
	// InsecureSkipVerify accepts any certificate from Control. False (the
	// zero value) verifies it; set it only for throwaway test setups.
	InsecureSkipVerify bool
	// Timeout bounds every request except watches. Zero means 30 seconds;
	// negative means no limit other than the caller's context.
	Timeout time.Duration
	// WatchIdleTimeout is how long a watch connection may stay silent
	// before it is considered dead and reopened. Control sends a bookmark
	// every 15 seconds, so zero means 60 seconds; negative disables the
	// check.
	WatchIdleTimeout time.Duration
	// UserAgent is sent with every request. Empty means
	// "kakuremichi-client".
	UserAgent string
}

// Client talks to one Control. It is safe for concurrent use.
type Client struct {
	base      *url.URL
	token     string
	http      *http.Client
	timeout   time.Duration
	idle      time.Duration
	userAgent string
}

// maxResponseBytes bounds what is read of one response: a list of many
// thousand objects fits, a runaway proxy does not exhaust memory.
const maxResponseBytes = 128 << 20

// New checks cfg and returns a client. It does not contact the server.
func New(cfg Config) (*Client, error) {
	if cfg.Server == "" {
		return nil, errors.New("create api client: no server URL given")
	}
	u, err := url.Parse(cfg.Server)
	if err != nil {
		return nil, fmt.Errorf("create api client: server URL %q: %w", cfg.Server, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("create api client: server URL %q must be http:// or https:// with a host", cfg.Server)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("create api client: server URL %q must not carry a query, fragment or credentials", cfg.Server)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	c := &Client{base: u, token: cfg.Token, http: cfg.HTTPClient, timeout: cfg.Timeout,
		idle: cfg.WatchIdleTimeout, userAgent: cfg.UserAgent}
	if c.timeout == 0 {
		c.timeout = 30 * time.Second
	}
	if c.idle == 0 {
		c.idle = 60 * time.Second
	}
	if c.userAgent == "" {
		c.userAgent = "kakuremichi-client"
	}
	if c.http != nil {
		if cfg.CAFile != "" || cfg.InsecureSkipVerify {
			return nil, errors.New("create api client: CAFile and InsecureSkipVerify configure the default HTTP client; set them on the given HTTPClient instead")
		}
		return c, nil
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: cfg.InsecureSkipVerify} //nolint:gosec // the user asked for it
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("create api client: read CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("create api client: CA file %s holds no PEM certificate", cfg.CAFile)
		}
		tlsConf.RootCAs = pool
	}
	tr.TLSClientConfig = tlsConf
	// No Client.Timeout: it would cut watches off. Requests are bounded by
	// c.timeout through their context instead.
	c.http = &http.Client{Transport: tr}
	return c, nil
}

// CloseIdleConnections closes the keep-alive connections the client holds
// open. A program that makes clients and drops them (a CLI run, a test)
// calls it when done with one, so its connections do not linger.
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

// Server returns the base URL the client talks to.
func (c *Client) Server() string { return c.base.String() }

// resourcePath returns the path of a collection, or of an item when name
// is not empty, or of a subresource of it.
func (c *Client) resourcePath(k api.KindInfo, name, sub string) string {
	p := c.base.Path + "/apis/" + api.APIVersion + "/" + k.Plural
	if name != "" {
		p += "/" + url.PathEscape(name)
	}
	if sub != "" {
		p += "/" + sub
	}
	return p
}

// request is one API call.
type request struct {
	method      string
	path        string
	query       url.Values
	body        []byte
	contentType string
	// stream leaves the response body open for the caller and does not
	// apply the request timeout.
	stream bool
}

// do sends r and returns the response body of a 2xx answer. Any other
// answer is returned as a *api.StatusError. With r.stream, the response is
// returned open and the caller closes its body.
func (c *Client) do(ctx context.Context, r request) ([]byte, *http.Response, error) {
	u := *c.base
	u.Path = r.path
	u.RawQuery = r.query.Encode()
	if !r.stream && c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u.String(), body)
	if err != nil {
		return nil, nil, err
	}
	if r.body != nil {
		ct := r.contentType
		if ct == "" {
			ct = "application/json"
		}
		req.Header.Set("Content-Type", ct)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return nil, nil, statusError(resp, data)
	}
	if r.stream {
		return nil, resp, nil
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return nil, nil, fmt.Errorf("read response: %w", err)
	}
	if len(data) > maxResponseBytes {
		return nil, nil, fmt.Errorf("read response: larger than %d bytes", maxResponseBytes)
	}
	return data, resp, nil
}

// reasonForCode is used when an error answer carries no api.Status, as
// when a proxy in front of Control answers.
var reasonForCode = map[int]api.StatusReason{
	http.StatusBadRequest:            api.ReasonBadRequest,
	http.StatusUnauthorized:          api.ReasonUnauthorized,
	http.StatusForbidden:             api.ReasonForbidden,
	http.StatusNotFound:              api.ReasonNotFound,
	http.StatusMethodNotAllowed:      api.ReasonMethodNotAllowed,
	http.StatusConflict:              api.ReasonConflict,
	http.StatusGone:                  api.ReasonExpired,
	http.StatusRequestEntityTooLarge: api.ReasonTooLarge,
	http.StatusUnprocessableEntity:   api.ReasonInvalid,
	http.StatusInternalServerError:   api.ReasonInternalError,
	http.StatusBadGateway:            api.ReasonUnavailable,
	http.StatusServiceUnavailable:    api.ReasonUnavailable,
	http.StatusGatewayTimeout:        api.ReasonUnavailable,
	http.StatusInsufficientStorage:   api.ReasonNoSpace,
}

// statusError turns an error answer into a *api.StatusError, from its
// api.Status body when it has one.
func statusError(resp *http.Response, body []byte) error {
	var st api.Status
	if err := json.Unmarshal(body, &st); err == nil && st.Reason != "" {
		if st.Code == 0 {
			st.Code = resp.StatusCode
		}
		if st.Message == "" {
			st.Message = fmt.Sprintf("%s (HTTP %d)", st.Reason, st.Code)
		}
		return &api.StatusError{Status: st}
	}
	reason, ok := reasonForCode[resp.StatusCode]
	if !ok {
		reason = api.ReasonInternalError
	}
	msg := strings.TrimSpace(string(body))
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	return &api.StatusError{Status: api.Status{
		TypeMeta: api.TypeMeta{APIVersion: "v1", Kind: "Status"},
		Code:     resp.StatusCode, Reason: reason,
		Message: fmt.Sprintf("%s %s: HTTP %d: %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, msg),
	}}
}

// wrap prefixes transport errors with what was being done. Answers of the
// API are returned as the *api.StatusError they are: their message was
// written by Control and already says what failed.
func wrap(op string, err error) error {
	var se *api.StatusError
	if errors.As(err, &se) {
		return se
	}
	return fmt.Errorf("%s: %w", op, err)
}

// lookupKind resolves any name api.LookupKind accepts.
func lookupKind(kind string) (api.KindInfo, error) {
	k, ok := api.LookupKind(kind)
	if !ok {
		return api.KindInfo{}, fmt.Errorf("unknown kind %q (known: %s)", kind, strings.Join(api.KindNames(), ", "))
	}
	return k, nil
}

// decodeAs decodes a served object and checks that it is of kind k. An
// object served without its kind gets it from k.
func decodeAs(k api.KindInfo, data []byte) (api.Object, error) {
	obj := k.New()
	if err := json.Unmarshal(data, obj); err != nil {
		return nil, fmt.Errorf("decode %s: %w", k.Singular, err)
	}
	tm := obj.GetTypeMeta()
	if tm.Kind != k.Kind {
		return nil, fmt.Errorf("decode %s: the server answered with kind %q", k.Singular, tm.Kind)
	}
	if tm.APIVersion == "" {
		tm.APIVersion = api.APIVersion
	}
	return obj, nil
}
