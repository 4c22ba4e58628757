package wgnet

import (
	"context"
	"encoding/base64"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/internal/leakcheck"
)

// recordHandler keeps records for inspection.
type recordHandler struct {
	level slog.Level
	mu    sync.Mutex // guards recs
	recs  []slog.Record
}

func (h *recordHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r)
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

func TestDeviceLogger(t *testing.T) {
	priv, _ := GeneratePrivateKey()
	pub := priv.PublicKey()
	hexKey := priv.hex()
	tests := []struct {
		name      string
		handler   slog.Level // the handler's threshold
		errorf    bool       // Errorf, else Verbosef
		format    string
		args      []any
		wantLevel slog.Level
		wantMsg   string // "" means nothing logged
	}{
		{"verbose to debug", slog.LevelDebug, false, "%v - Received handshake initiation", []any{"peer(abcd…wxyz)"},
			slog.LevelDebug, "wireguard: peer(abcd…wxyz) - Received handshake initiation"},
		{"goroutine noise dropped", slog.LevelDebug, false, "Routine: decryption worker %d - started", []any{1}, 0, ""},
		{"keepalive noise dropped", slog.LevelDebug, false, "%v - Sending keepalive packet", []any{"peer(x)"}, 0, ""},
		{"UAPI echo dropped", slog.LevelDebug, false, "UAPI: Updating private key", nil, 0, ""},
		{"verbose below threshold", slog.LevelInfo, false, "%v - Received handshake initiation", []any{"p"}, 0, ""},
		{"error to warn", slog.LevelDebug, true, "Failed to write packets to TUN device: %v", []any{"boom"},
			slog.LevelWarn, "wireguard: Failed to write packets to TUN device: boom"},
		{"routine error to debug", slog.LevelDebug, true, "%v - Failed to send handshake initiation: %v", []any{"peer(x)", "no known endpoint for peer"},
			slog.LevelDebug, "wireguard: peer(x) - Failed to send handshake initiation: no known endpoint for peer"},
		{"hex key redacted", slog.LevelDebug, true, "failed to parse line %q", []any{"private_key=" + hexKey},
			slog.LevelWarn, `wireguard: failed to parse line "private_key=[redacted]"`},
		{"upper-case hex key redacted", slog.LevelDebug, true, "bad %s", []any{strings.ToUpper(hexKey)},
			slog.LevelWarn, "wireguard: bad [redacted]"},
		{"base64 key redacted", slog.LevelDebug, false, "key %s and %s", []any{priv.Base64(), pub.String()},
			slog.LevelDebug, "wireguard: key [redacted] and [redacted]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &recordHandler{level: tt.handler}
			dl := DeviceLogger(slog.New(h))
			if tt.errorf {
				dl.Errorf(tt.format, tt.args...)
			} else {
				dl.Verbosef(tt.format, tt.args...)
			}
			if tt.wantMsg == "" {
				if len(h.recs) != 0 {
					t.Fatalf("got %d records (%q), want none", len(h.recs), h.recs[0].Message)
				}
				return
			}
			if len(h.recs) != 1 {
				t.Fatalf("got %d records, want 1", len(h.recs))
			}
			if r := h.recs[0]; r.Level != tt.wantLevel || r.Message != tt.wantMsg {
				t.Errorf("got %v %q, want %v %q", r.Level, r.Message, tt.wantLevel, tt.wantMsg)
			}
		})
	}
	// A nil logger discards without panicking.
	DeviceLogger(nil).Errorf("x %s", "y")
	DeviceLogger(nil).Verbosef("x %s", "y")
}

func TestRedact(t *testing.T) {
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	tests := []struct{ in, want string }{
		{"no keys here", "no keys here"},
		{"peer(abcd…wxyz) short form kept", "peer(abcd…wxyz) short form kept"},
		{"k=" + key + ".", "k=[redacted]."},
		{"63 hex " + strings.Repeat("a", 63) + " kept", "63 hex " + strings.Repeat("a", 63) + " kept"},
		{strings.Repeat("ab", 32), "[redacted]"},
	}
	for _, tt := range tests {
		if got := redact(tt.in); got != tt.want {
			t.Errorf("redact(%q): got %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestKeysNeverLogged runs devices at debug level through setup, peer
// changes, traffic and a configuration line that wireguard-go echoes in
// its error, and finds neither private key anywhere in their logs.
func TestKeysNeverLogged(t *testing.T) {
	leakcheck.Goroutines(t)
	agent, gw := pair(t)
	dialEcho(t, gw, agent, serveEcho(t, agent))
	p := agent.asPassive()
	p.PersistentKeepalive = 20 * time.Second
	gw.setPeers(t, p)
	gw.setPeers(t)
	// wireguard-go logs this unparsable line verbatim in its error.
	err := agent.dev.wg.IpcSet(agent.priv.hex() + "\n")
	if err == nil {
		t.Fatalf("IpcSet of a bare key line: got nil error, want one")
	}
	if s := (redactedError{err}).Error(); strings.Contains(s, agent.priv.hex()) {
		t.Errorf("redactedError: got %q, which contains the key", s)
	}

	for _, n := range []*node{agent, gw} {
		logs := n.logs.String()
		if !strings.Contains(logs, "failed to parse line") && n == agent {
			t.Errorf("%s: wireguard-go's parse error is missing from the logs; the test did not exercise it", n.name)
		}
		if !strings.Contains(logs, "handshake") {
			t.Errorf("%s: no handshake in the logs; debug logging did not work", n.name)
		}
		for _, other := range []*node{agent, gw} {
			secrets := []string{other.priv.Base64(), other.priv.hex(), strings.ToUpper(other.priv.hex())}
			if s := containsAny(logs, secrets...); s != "" {
				t.Errorf("%s's logs contain %s's private key", n.name, other.name)
			}
		}
	}
}
