package agent

import (
	"bufio"
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api/bridge"
	"github.com/kakuremichi/kakuremichi/internal/leakcheck"
)

// get sends one HTTP/1.1 request on s and reads the response.
func get(t testing.TB, s *gwStream, host, path string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+host+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.SetDeadline(time.Now().Add(5 * time.Second))
	defer s.SetDeadline(time.Time{})
	if err := req.Write(s); err != nil {
		t.Fatalf("writing the request: %v", err)
	}
	resp, err := http.ReadResponse(s.r, req)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	return resp, string(body)
}

// origin answers with what it saw: the Host header and whether the
// request came over TLS.
func origin(w http.ResponseWriter, r *http.Request) {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	io.WriteString(w, scheme+" "+r.Host+" "+r.URL.Path)
}

// TestForwardHTTP: http and https targets answer through the agent; an
// https origin with a self-signed certificate is reached only when the
// tunnel skips verification, and otherwise the stream is refused with the
// certificate error.
func TestForwardHTTP(t *testing.T) {
	leakcheck.Goroutines(t)
	plain := httptest.NewServer(http.HandlerFunc(origin))
	t.Cleanup(plain.Close)
	selfSigned := httptest.NewUnstartedServer(http.HandlerFunc(origin))
	// Refused handshakes are the point of one case; keep them out of the
	// test output.
	selfSigned.Config.ErrorLog = log.New(io.Discard, "", 0)
	selfSigned.StartTLS()
	t.Cleanup(selfSigned.Close)

	fwds := []bridge.Forward{
		{Tunnel: "web", Target: plain.URL, Enabled: true},
		{Tunnel: "secure-skip", Target: selfSigned.URL, InsecureSkipVerify: true, Enabled: true},
		{Tunnel: "secure-verify", Target: selfSigned.URL, Enabled: true},
	}
	f := startAgent(t, Config{}, fwds...)

	tests := []struct {
		tunnel   string
		wantBody string // empty when a refusal is wanted
		wantCode string
		wantMsg  string
	}{
		{tunnel: "web", wantBody: "http fuga.sample.com /hello"},
		{tunnel: "secure-skip", wantBody: "https fuga.sample.com /hello"},
		{tunnel: "secure-verify", wantCode: bridge.RefuseTargetUnreachable, wantMsg: "certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.tunnel, func(t *testing.T) {
			if tt.wantCode != "" {
				err, took := f.openErr(t, tt.tunnel)
				if got := refusalCode(err); got != tt.wantCode {
					t.Fatalf("refusal: got %s, want %s", got, tt.wantCode)
				}
				if !strings.Contains(err.Error(), tt.wantMsg) {
					t.Errorf("refusal message: got %q, want it to mention %q", err, tt.wantMsg)
				}
				if took > time.Second {
					t.Errorf("refusal took %v, want < 1s", took)
				}
				return
			}
			s := f.open(t, tt.tunnel)
			// Two requests on one stream: keep-alive works through it.
			for range 2 {
				resp, body := get(t, s, "fuga.sample.com", "/hello")
				if resp.StatusCode != http.StatusOK || body != tt.wantBody {
					t.Fatalf("response: got %d %q, want 200 %q", resp.StatusCode, body, tt.wantBody)
				}
			}
		})
	}
}

// TestRefusals: every stream the agent will not serve is answered at
// once with the code the gateway turns into an error page, never a hang.
func TestRefusals(t *testing.T) {
	leakcheck.Goroutines(t)
	up := serveTCP(t, lineEcho)
	down := closedPort(t)

	tests := []struct {
		name      string
		self      func(*bridge.Self)
		fwds      []bridge.Forward
		tunnel    string
		wantCode  string
		wantInMsg string
	}{
		{
			name:     "unknown tunnel",
			fwds:     []bridge.Forward{{Tunnel: "db", Target: "tcp://" + up, Enabled: true}},
			tunnel:   "other",
			wantCode: bridge.RefuseUnknownTunnel, wantInMsg: `"other"`,
		},
		{
			name:     "no forwards at all",
			tunnel:   "db",
			wantCode: bridge.RefuseUnknownTunnel,
		},
		{
			name:     "disabled tunnel",
			fwds:     []bridge.Forward{{Tunnel: "db", Target: "tcp://" + up, Enabled: false}},
			tunnel:   "db",
			wantCode: bridge.RefuseDisabled, wantInMsg: `tunnel "db" is disabled`,
		},
		{
			name:     "disabled agent",
			self:     func(s *bridge.Self) { s.Enabled = false },
			fwds:     []bridge.Forward{{Tunnel: "db", Target: "tcp://" + up, Enabled: true}},
			tunnel:   "db",
			wantCode: bridge.RefuseDisabled, wantInMsg: "agent",
		},
		{
			name:     "target refuses",
			fwds:     []bridge.Forward{{Tunnel: "db", Target: "tcp://" + down, Enabled: true}},
			tunnel:   "db",
			wantCode: bridge.RefuseTargetUnreachable, wantInMsg: "refused",
		},
		{
			name:     "target that cannot be parsed",
			fwds:     []bridge.Forward{{Tunnel: "db", Target: "ftp://files:21", Enabled: true}},
			tunnel:   "db",
			wantCode: bridge.RefuseTargetUnreachable, wantInMsg: "invalid target",
		},
	}
	f := startAgent(t, Config{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			self := f.self
			if tt.self != nil {
				tt.self(&self)
			}
			if err := f.agent.Apply(sliceOf(self, []bridge.Peer{f.gw.asPeer()}, tt.fwds...)); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			err, took := f.openErr(t, tt.tunnel)
			if got := refusalCode(err); got != tt.wantCode {
				t.Fatalf("answer: got %s, want refusal %s", got, tt.wantCode)
			}
			if !strings.Contains(err.Error(), tt.wantInMsg) {
				t.Errorf("refusal message: got %q, want it to contain %q", err, tt.wantInMsg)
			}
			if took > time.Second {
				t.Errorf("answer took %v, want < 1s", took)
			}
		})
	}
}

// TestBadPreamble: a stream that does not start with a preamble is
// refused as such, and one that says nothing is closed.
func TestBadPreamble(t *testing.T) {
	leakcheck.Goroutines(t)
	f := startAgent(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := f.gw.dev.DialContext(ctx, "tcp", net.JoinHostPort(agentAddr.String(), "7000"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	err = bridge.ReadAnswer(bufio.NewReader(c))
	if got := refusalCode(err); got != bridge.RefuseBadPreamble {
		t.Fatalf("answer: got %s, want refusal %s", got, bridge.RefuseBadPreamble)
	}
}

// TestTCPHalfClose: a tcp target with a line protocol, and each side
// half-closing in turn while the other keeps talking.
func TestTCPHalfClose(t *testing.T) {
	leakcheck.Goroutines(t)
	echo := serveTCP(t, lineEcho)
	// greeter says hello, half-closes, and then reports what it still
	// receives from the client until EOF. Connections that bring nothing
	// (the agent's probes) are not reported.
	received := make(chan string, 1)
	greeter := serveTCP(t, func(c net.Conn) {
		io.WriteString(c, "hello\n")
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			return
		}
		b, err := io.ReadAll(c)
		if err != nil || len(b) == 0 {
			return
		}
		received <- string(b)
	})
	f := startAgent(t, Config{},
		bridge.Forward{Tunnel: "echo", Target: "tcp://" + echo, Enabled: true},
		bridge.Forward{Tunnel: "greeter", Target: "tcp://" + greeter, Enabled: true},
	)

	t.Run("gateway half-closes", func(t *testing.T) {
		s := f.open(t, "echo")
		io.WriteString(s, "one\n")
		if got, want := readLine(t, s), "echo: one\n"; got != want {
			t.Fatalf("first answer: got %q, want %q", got, want)
		}
		io.WriteString(s, "two\n")
		if err := s.Conn.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
			t.Fatalf("CloseWrite: %v", err)
		}
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		rest, err := io.ReadAll(s)
		if err != nil {
			t.Fatalf("reading to EOF: %v", err)
		}
		if got, want := string(rest), "echo: two\nbye\n"; got != want {
			t.Fatalf("after half-close: got %q, want %q", got, want)
		}
	})

	t.Run("target half-closes", func(t *testing.T) {
		s := f.open(t, "greeter")
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(s)
		if err != nil {
			t.Fatalf("reading to EOF: %v", err)
		}
		if got, want := string(b), "hello\n"; got != want {
			t.Fatalf("greeting: got %q, want %q", got, want)
		}
		// The target no longer writes, but still reads.
		io.WriteString(s, "still here\n")
		s.Conn.(interface{ CloseWrite() error }).CloseWrite()
		select {
		case got := <-received:
			if want := "still here\n"; got != want {
				t.Fatalf("target received: got %q, want %q", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the target never saw the client's EOF")
		}
	})
}

// TestStreamsLive: a live stream survives applying the same slice, which
// changes nothing in WireGuard; changing its tunnel closes it, and new
// streams get the new answer.
func TestStreamsLive(t *testing.T) {
	leakcheck.Goroutines(t)
	echo := serveTCP(t, lineEcho)
	other := serveTCP(t, func(c net.Conn) { io.WriteString(c, "other\n") })
	fwd := bridge.Forward{Tunnel: "db", Target: "tcp://" + echo, Enabled: true}

	tests := []struct {
		name string
		next []bridge.Forward // the forwards after the change
		// wantClosed says whether the live stream must be closed.
		wantClosed bool
		// wantCode is the answer to a new stream ("" = served).
		wantCode string
		// wantLine is what a new stream reads first when served.
		wantLine string
	}{
		{name: "same slice", next: []bridge.Forward{fwd}, wantLine: "echo: ping\n"},
		{name: "another tunnel added", next: []bridge.Forward{fwd, {Tunnel: "web", Target: "http://127.0.0.1:1", Enabled: true}}, wantLine: "echo: ping\n"},
		{name: "forward removed", next: nil, wantClosed: true, wantCode: bridge.RefuseUnknownTunnel},
		{name: "forward disabled", next: []bridge.Forward{{Tunnel: "db", Target: fwd.Target, Enabled: false}}, wantClosed: true, wantCode: bridge.RefuseDisabled},
		{name: "target changed", next: []bridge.Forward{{Tunnel: "db", Target: "tcp://" + other, Enabled: true}}, wantClosed: true, wantLine: "other\n"},
	}
	f := startAgent(t, Config{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := f.agent.apply(context.Background(), f.slice(fwd)); err != nil {
				t.Fatalf("apply: %v", err)
			}
			s := f.open(t, "db")
			io.WriteString(s, "ping\n")
			if got, want := readLine(t, s), "echo: ping\n"; got != want {
				t.Fatalf("before: got %q, want %q", got, want)
			}
			hs := f.gw.handshakeWith(t, f.agent.PublicKey())

			rep, err := f.agent.apply(context.Background(), f.slice(tt.next...))
			if err != nil {
				t.Fatalf("apply: %v", err)
			}
			if rep.deviceCreated || rep.deviceClosed || rep.peersChanged {
				t.Errorf("wireguard changes: got %+v, want none", rep)
			}
			if got, want := rep.streamsClosed, map[bool]int{false: 0, true: 1}[tt.wantClosed]; got != want {
				t.Errorf("streams closed: got %d, want %d", got, want)
			}
			if got := f.gw.handshakeWith(t, f.agent.PublicKey()); !got.Equal(hs) {
				t.Errorf("handshake: got %v, want the session kept (%v)", got, hs)
			}

			io.WriteString(s, "again\n")
			s.SetReadDeadline(time.Now().Add(5 * time.Second))
			line, err := s.r.ReadString('\n')
			if tt.wantClosed {
				if err == nil {
					t.Errorf("live stream: got %q, want it closed", line)
				}
			} else if want := "echo: again\n"; err != nil || line != want {
				t.Errorf("live stream: got %q, %v, want %q", line, err, want)
			}

			if tt.wantCode != "" {
				err, _ := f.openErr(t, "db")
				if got := refusalCode(err); got != tt.wantCode {
					t.Errorf("new stream: got %s, want refusal %s", got, tt.wantCode)
				}
				return
			}
			n := f.open(t, "db")
			if tt.wantLine == "echo: ping\n" {
				io.WriteString(n, "ping\n")
			}
			if got := readLine(t, n); got != tt.wantLine {
				t.Errorf("new stream: got %q, want %q", got, tt.wantLine)
			}
		})
	}
}

// TestAddressChange: a new overlay address recreates the device; the
// streams of the old one end (their targets see it), and the agent is
// reached at the new one.
func TestAddressChange(t *testing.T) {
	leakcheck.Goroutines(t)
	ended := make(chan struct{}, 1)
	echo := serveTCP(t, func(c net.Conn) {
		lineEcho(c)
		select {
		case ended <- struct{}{}:
		default:
		}
	})
	fwd := bridge.Forward{Tunnel: "db", Target: "tcp://" + echo, Enabled: true}
	f := startAgent(t, Config{}, fwd)
	old := f.open(t, "db")
	io.WriteString(old, "before\n")
	if got, want := readLine(t, old), "echo: before\n"; got != want {
		t.Fatalf("before the move: got %q, want %q", got, want)
	}

	// WireGuard drops a handshake initiation that follows the last one
	// from the same key within 20 ms (a flood); the recreated device
	// would then retry only after 5 s. A real move is never that quick.
	hs := f.gw.handshakeWith(t, f.agent.PublicKey())
	waitFor(t, time.Second, "the handshake to age", func() bool { return time.Since(hs) > 50*time.Millisecond })

	moved := netip.MustParseAddr("100.64.0.9")
	f.self.Address = moved
	f.gw.admit(t, f.agent.PublicKey(), moved)
	rep, err := f.agent.apply(context.Background(), f.slice(fwd))
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if !rep.deviceClosed || !rep.deviceCreated {
		t.Errorf("report: got %+v, want the device closed and created", rep)
	}
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Errorf("the old stream's target connection is still open 5 s after the move")
	}
	waitFor(t, 10*time.Second, "the recreated device to handshake", func() bool {
		return f.gw.handshakeWith(t, f.agent.PublicKey()).After(hs)
	})
	s := f.gw.mustOpen(t, moved, "db")
	io.WriteString(s, "moved\n")
	if got, want := readLine(t, s), "echo: moved\n"; got != want {
		t.Errorf("at the new address: got %q, want %q", got, want)
	}
}
