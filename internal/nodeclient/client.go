// Package nodeclient is a node's end of the watch bridge, shared by the
// agent and the gateway: it enrols with an API key, keeps the node's
// WireGuard key, credential and last slice in its state directory (files
// mode 0600), connects to Control, resumes from the revision and digest it
// holds, hands every new slice to the node, sends heartbeats with the
// node's status, and reconnects with backoff and jitter. When Control is
// unreachable the node runs from the slice kept on disk.
//
// It imports api, api/bridge, internal/wgnet and the WebSocket library;
// never the store.
package nodeclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/api/bridge"
	"github.com/kakuremichi/kakuremichi/internal/securefile"
	"github.com/kakuremichi/kakuremichi/internal/wgnet"
)

// Files in the state directory.
const (
	keyFile        = "wireguard.key"
	credentialFile = "credential"
	sliceFile      = "slice.json"
)

// Config configures a Client.
type Config struct {
	// ControlURL is Control's base URL, e.g. https://control.example.
	// Required.
	ControlURL string
	// APIKey enrols the node. Optional once the node holds a credential:
	// then a failed registration falls back to the stored credential.
	APIKey string
	// Kind is "Agent" or "Gateway". Required.
	Kind string
	// Name is the node's name. Required.
	Name string
	// PublicEndpoint is the host:port agents dial (gateways only).
	PublicEndpoint string
	// PublicKey is the node's WireGuard public key. Required.
	PublicKey wgnet.Key
	// StateDir keeps the credential and the last slice. Required.
	StateDir string
	// Version is reported to Control.
	Version string
	// CAFile, when set, is the CA bundle that verifies Control's TLS.
	CAFile string
	// InsecureSkipVerify skips verifying Control's TLS certificate.
	InsecureSkipVerify bool
	// Apply receives each new slice; an error is logged and retried on
	// the next change or reconnect. Apply or Changes is required.
	Apply func(bridge.Slice) error
	// Changes, in place of Apply, receives each Snapshot and Delta itself,
	// once its digest has been checked, for a node that keeps its own
	// copy of the slice. The client then keeps only the slice's encoding,
	// and a delta costs its own items instead of a copy of the whole
	// slice: what lets one process follow the slices of a thousand
	// gateways. At start, a slice saved on disk comes as a Snapshot. An
	// error is logged; the message is not given again.
	Changes func(bridge.Message) error
	// Status returns the node's status for heartbeats. Required.
	Status func() bridge.NodeStatus
	// Synced, when set, is called after each Snapshot, Delta or UpToDate
	// is handled: the node then holds Control's slice as of revision.
	Synced func(revision int64)
	// HeartbeatInterval is how often status is sent; zero means 10 s.
	HeartbeatInterval time.Duration
	// MaxBackoff caps the wait between reconnections; zero means 30 s.
	MaxBackoff time.Duration
	// SaveInterval is the least time between two writes of the slice
	// file; zero means 1 s (save.go).
	SaveInterval time.Duration
	// Logger receives the client's logs; nil discards.
	Logger *slog.Logger
}

// Client is a running bridge connection.
type Client struct {
	cfg  Config
	log  *slog.Logger
	http *http.Client

	mu         sync.Mutex // guards credential, slice, enc, revision, connected
	credential string
	slice      bridge.Slice
	enc        *encoded // slice's items encoded; nil when slice is
	revision   int64
	connected  bool

	// beat asks the heartbeat loop for a heartbeat now (buffered, one).
	beat chan struct{}

	// encMu guards the content of enc, which a delta changes in place
	// (and digest, which keeps its marks there); taken before mu.
	encMu sync.Mutex

	saveMu    sync.Mutex // guards lastSave, saveTimer (save.go); taken first
	lastSave  time.Time
	saveTimer *time.Timer // a write of the slice file is due
}

// LoadOrCreateKey returns the node's WireGuard private key from the state
// directory, creating it (mode 0600) on first use.
func LoadOrCreateKey(stateDir string) (wgnet.PrivateKey, error) {
	path := filepath.Join(stateDir, keyFile)
	data, err := os.ReadFile(path)
	if err == nil {
		k, err := wgnet.ParsePrivateKey(strings.TrimSpace(string(data)))
		if err != nil {
			return wgnet.PrivateKey{}, fmt.Errorf("load wireguard key %s: %w", path, err)
		}
		return k, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return wgnet.PrivateKey{}, fmt.Errorf("load wireguard key: %w", err)
	}
	k, err := wgnet.GeneratePrivateKey()
	if err != nil {
		return wgnet.PrivateKey{}, err
	}
	if err := securefile.Write(path, []byte(k.Base64()+"\n")); err != nil {
		return wgnet.PrivateKey{}, fmt.Errorf("save wireguard key: %w", err)
	}
	return k, nil
}

// SaveCredential stores a credential obtained outside registration (a
// node enrolled by Control itself) where New finds it.
func SaveCredential(stateDir, credential string) error {
	return securefile.Write(filepath.Join(stateDir, credentialFile), []byte(credential+"\n"))
}

// savedSlice is the on-disk form of the last slice.
type savedSlice struct {
	Revision int64         `json:"revision"`
	Items    []bridge.Item `json:"items"`
}

// New checks cfg and loads what the state directory holds.
func New(cfg Config) (*Client, error) {
	switch {
	case cfg.ControlURL == "":
		return nil, errors.New("nodeclient: the Control URL is required (CONTROL_URL)")
	case cfg.Kind != "Agent" && cfg.Kind != "Gateway":
		return nil, fmt.Errorf("nodeclient: kind %q is not Agent or Gateway", cfg.Kind)
	case cfg.StateDir == "" || cfg.Status == nil:
		return nil, errors.New("nodeclient: StateDir and Status are required")
	case (cfg.Apply == nil) == (cfg.Changes == nil):
		return nil, errors.New("nodeclient: exactly one of Apply and Changes is required")
	}
	if err := api.ValidateName(cfg.Name); err != nil {
		return nil, fmt.Errorf("nodeclient: node name: %w", err)
	}
	if _, err := url.Parse(cfg.ControlURL); err != nil {
		return nil, fmt.Errorf("nodeclient: control URL: %w", err)
	}
	cfg.ControlURL = strings.TrimSuffix(cfg.ControlURL, "/")
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = 10 * time.Second
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.SaveInterval == 0 {
		cfg.SaveInterval = saveInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: cfg.InsecureSkipVerify}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("nodeclient: CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("nodeclient: CA file %s holds no PEM certificate", cfg.CAFile)
		}
		tlsCfg.RootCAs = pool
	}
	// Registration is one request now and then: its connection does not
	// stay open beside the watch (a fleet would hold two descriptors per
	// node on Control).
	c := &Client{cfg: cfg, log: cfg.Logger, beat: make(chan struct{}, 1), http: &http.Client{Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: tlsCfg, Proxy: http.ProxyFromEnvironment, IdleConnTimeout: 30 * time.Second}}}
	if data, err := os.ReadFile(filepath.Join(cfg.StateDir, credentialFile)); err == nil {
		c.credential = strings.TrimSpace(string(data))
	}
	if data, err := os.ReadFile(filepath.Join(cfg.StateDir, sliceFile)); err == nil {
		var saved savedSlice
		if err := json.Unmarshal(data, &saved); err != nil {
			c.log.Warn("ignoring an unreadable saved slice", "err", err)
		} else if sl, err := (bridge.Slice{}).Apply(bridge.Message{Type: bridge.Snapshot, Items: saved.Items}); err == nil {
			c.slice, c.enc, c.revision = sl, encode(sl), saved.Revision
		}
	}
	return c, nil
}

// Connected reports whether a bridge connection is open.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connected
}

// Run applies the saved slice at once (so the node serves while Control is
// down), then registers and keeps a bridge connection until ctx is done.
// It returns an error only for a failure no retry can fix.
func (c *Client) Run(ctx context.Context) error {
	defer c.flushSave()
	c.mu.Lock()
	saved, rev := c.slice, c.revision
	if c.cfg.Changes != nil {
		c.slice = nil // the node keeps its own copy
	}
	c.mu.Unlock()
	if saved != nil {
		c.log.Info("serving the slice kept on disk until control answers", "revision", rev, "items", len(saved))
		if err := c.apply(saved, bridge.Message{Type: bridge.Snapshot, Revision: rev, Items: saved.Items()}); err != nil {
			c.log.Error("apply saved slice", "err", err)
		}
	}
	registered := false
	for attempt := 0; ctx.Err() == nil; attempt++ {
		if !registered && c.cfg.APIKey != "" {
			err := c.register(ctx)
			var fatal *fatalError
			switch {
			case err == nil:
				registered = true
			case errors.As(err, &fatal) && c.hasCredential():
				c.log.Warn("registration refused; using the credential already held", "err", err)
				registered = true
			case errors.As(err, &fatal):
				return err
			default:
				c.log.Warn("cannot reach control to register; retrying", "err", err)
			}
		}
		if !c.hasCredential() {
			if c.cfg.APIKey == "" {
				return errors.New("no credential in the state directory and no API key (API_KEY) to enrol with")
			}
			c.sleep(ctx, attempt)
			continue
		}
		established, err := c.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if established {
			// A connection that was up and then ended starts the backoff
			// over: a fleet whose Control restarts comes back within the
			// first steps, not after the backoff of failures long past.
			attempt = 0
		}
		var fatal *fatalError
		if errors.As(err, &fatal) {
			// The credential was revoked or the node deleted: enrol again
			// if we can, else keep serving the saved slice and retry.
			c.log.Warn("control refused the node's credential", "err", err)
			registered = false
		} else if err != nil {
			c.log.Info("bridge connection ended; reconnecting", "err", err)
		} else {
			attempt = 0
		}
		c.sleep(ctx, attempt)
	}
	return nil
}

func (c *Client) hasCredential() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.credential != ""
}

// sleep waits a backoff with full jitter: a fleet reconnecting after a
// Control restart spreads out instead of arriving at once.
func (c *Client) sleep(ctx context.Context, attempt int) {
	d := 500 * time.Millisecond << min(attempt, 10)
	if d > c.cfg.MaxBackoff || d <= 0 {
		d = c.cfg.MaxBackoff
	}
	d = d/2 + rand.N(d/2+1)
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// fatalError is a refusal that retrying with the same input cannot fix.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

func (c *Client) register(ctx context.Context) error {
	body, _ := json.Marshal(bridge.RegisterRequest{Kind: c.cfg.Kind, Name: c.cfg.Name, PublicKey: c.cfg.PublicKey.String(),
		PublicEndpoint: c.cfg.PublicEndpoint, Version: c.cfg.Version})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.cfg.ControlURL+bridge.RegisterPath, bytes.NewReader(body))
	if err != nil {
		return &fatalError{err}
	}
	req.Header.Set("Authorization", "Bearer "+c.cfg.APIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	defer c.http.CloseIdleConnections()
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		err := fmt.Errorf("register %s %q: %s", c.cfg.Kind, c.cfg.Name, statusMessage(resp.StatusCode, data))
		if resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusConflict {
			return &fatalError{err}
		}
		return err
	}
	var out bridge.RegisterResponse
	if err := json.Unmarshal(data, &out); err != nil || out.Credential == "" {
		return fmt.Errorf("register: unreadable answer")
	}
	if err := securefile.Write(filepath.Join(c.cfg.StateDir, credentialFile), []byte(out.Credential+"\n")); err != nil {
		return &fatalError{fmt.Errorf("save credential: %w", err)}
	}
	c.mu.Lock()
	c.credential = out.Credential
	c.mu.Unlock()
	c.log.Info("registered with control", "kind", c.cfg.Kind, "name", c.cfg.Name)
	return nil
}

func statusMessage(code int, body []byte) string {
	var st api.Status
	if json.Unmarshal(body, &st) == nil && st.Message != "" {
		return fmt.Sprintf("%d %s: %s", code, st.Reason, st.Message)
	}
	return fmt.Sprintf("%d %s", code, http.StatusText(code))
}

// session runs one bridge connection until it ends; established says
// whether the WebSocket was open.
func (c *Client) session(ctx context.Context) (established bool, err error) {
	c.encMu.Lock()
	c.mu.Lock()
	cred, rev, digest := c.credential, c.revision, ""
	if c.enc != nil {
		digest = c.enc.digest()
	}
	c.mu.Unlock()
	c.encMu.Unlock()
	u := strings.Replace(c.cfg.ControlURL, "http", "ws", 1) + bridge.WatchPath +
		"?revision=" + strconv.FormatInt(rev, 10) + "&digest=" + url.QueryEscape(digest)
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	ws, resp, err := websocket.Dial(dctx, u, &websocket.DialOptions{HTTPClient: c.http,
		HTTPHeader: http.Header{"Authorization": {"Bearer " + cred}}})
	cancel()
	if err != nil {
		if resp != nil && (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusNotFound) {
			return false, &fatalError{fmt.Errorf("connect: %s", http.StatusText(resp.StatusCode))}
		}
		return false, fmt.Errorf("connect: %w", err)
	}
	ws.SetReadLimit(bridge.MaxMessageBytes)
	defer ws.CloseNow()
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	c.setConnected(true)
	defer c.setConnected(false)
	c.log.Info("connected to control", "resume", rev)

	var wg sync.WaitGroup
	// Stop the heartbeats before waiting for them: waiting first held a
	// node whose connection dropped until its next heartbeat failed.
	defer func() {
		stop()
		wg.Wait()
	}()
	// The first heartbeat waits for Control's first message, which says
	// whether Control takes heartbeats with only what changed.
	first, changes := make(chan struct{}), new(atomic.Bool)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer stop()
		select {
		case <-first:
		case <-sctx.Done():
			return
		case <-time.After(c.cfg.HeartbeatInterval):
		}
		c.heartbeats(sctx, ws, changes)
	}()
	for read := 0; ; read++ {
		typ, data, err := ws.Read(sctx)
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) && ce.Code == websocket.StatusPolicyViolation {
				return true, &fatalError{fmt.Errorf("control closed the connection: %s", ce.Reason)}
			}
			return true, err
		}
		if typ != websocket.MessageText {
			continue
		}
		var m bridge.Message
		if err := json.Unmarshal(data, &m); err != nil {
			return true, fmt.Errorf("decode message: %w", err)
		}
		if read == 0 {
			changes.Store(m.AcceptsChanges)
		}
		err = c.handle(m)
		if read == 0 {
			close(first)
		}
		if err != nil {
			return true, err
		}
	}
}

func (c *Client) setConnected(v bool) {
	c.mu.Lock()
	c.connected = v
	c.mu.Unlock()
}

// handle applies one message from Control.
func (c *Client) handle(m bridge.Message) error {
	switch m.Type {
	case bridge.UpToDate:
		c.mu.Lock()
		c.revision = m.Revision
		c.mu.Unlock()
		c.synced(m.Revision)
		return nil
	case bridge.Snapshot, bridge.Delta:
	case bridge.Error:
		return &fatalError{fmt.Errorf("control: %s", m.Message)}
	default:
		return nil
	}
	c.mu.Lock()
	cur, enc := c.slice, c.enc
	c.mu.Unlock()
	var next bridge.Slice
	if c.cfg.Changes != nil {
		// The node keeps the slice: check what Apply would.
		if err := m.CheckItems(); err != nil {
			return err
		}
	} else {
		if cur == nil {
			cur = bridge.Slice{}
		}
		var err error
		if next, err = cur.Apply(m); err != nil {
			return err
		}
	}
	c.encMu.Lock()
	nextEnc := enc.apply(m)
	// encMu stays held until enc and revision agree again: a write of
	// the slice file between the two would save the one with the other.
	if m.Digest != "" && nextEnc.digest() != m.Digest {
		// A gap: ask for a snapshot by reconnecting without a digest.
		c.mu.Lock()
		c.slice, c.enc, c.revision = nil, nil, 0
		c.mu.Unlock()
		c.encMu.Unlock()
		return fmt.Errorf("slice digest mismatch after %s at revision %d; resyncing", m.Type, m.Revision)
	}
	if err := c.apply(next, m); err != nil {
		c.log.Error("apply slice", "revision", m.Revision, "err", err)
	}
	c.mu.Lock()
	c.slice, c.enc, c.revision = next, nextEnc, m.Revision
	c.mu.Unlock()
	c.encMu.Unlock()
	c.saveSoon()
	c.synced(m.Revision)
	if hasChallenge(m) {
		// Control tells the CA to validate once every gateway has said
		// (with its revision, in a heartbeat) that it holds the
		// challenge: say so now, not at the next heartbeat.
		select {
		case c.beat <- struct{}{}:
		default:
		}
	}
	return nil
}

// apply hands the node a new slice: sl to Apply, or m, which made it, to
// Changes.
func (c *Client) apply(sl bridge.Slice, m bridge.Message) error {
	if c.cfg.Changes != nil {
		return c.cfg.Changes(m)
	}
	return c.cfg.Apply(sl)
}

// hasChallenge reports whether m brings an ACME challenge.
func hasChallenge(m bridge.Message) bool {
	for _, it := range m.Items {
		if it.Challenge != nil {
			return true
		}
	}
	return false
}

func (c *Client) synced(rev int64) {
	if c.cfg.Synced != nil {
		c.cfg.Synced(rev)
	}
}

// heartbeats sends the node's status every HeartbeatInterval (or when
// asked through beat) until ctx is done or a write fails. Where Control
// takes them (changes), the first heartbeat carries the whole status in
// reported form and the rest only what changed in it: a node of
// thousands of peers sends a few bytes when nothing Control shows has
// changed.
func (c *Client) heartbeats(ctx context.Context, ws *websocket.Conn, changes *atomic.Bool) {
	t := time.NewTicker(c.cfg.HeartbeatInterval)
	defer t.Stop()
	var sent *bridge.NodeStatus // what Control holds, in reported form
	for {
		st := c.cfg.Status()
		st.Version = c.cfg.Version
		c.mu.Lock()
		st.Revision = c.revision
		c.mu.Unlock()
		m, next := bridge.Message{Type: bridge.Heartbeat, Status: &st}, (*bridge.NodeStatus)(nil)
		if changes.Load() {
			rep := st.Reported(time.Now())
			next, m.Status = &rep, &rep
			if sent != nil {
				ch := sent.ChangesTo(rep)
				m.Status, m.Changes = nil, &ch
			}
		}
		data, _ := json.Marshal(m)
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := ws.Write(wctx, websocket.MessageText, data)
		cancel()
		if err != nil {
			return
		}
		sent = next
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.beat:
		}
	}
}
