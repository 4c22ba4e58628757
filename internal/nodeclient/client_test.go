package nodeclient

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/kakuremichi/kakuremichi/api/bridge"
	"github.com/kakuremichi/kakuremichi/internal/wgnet"
)

// TestReconnectsWhenTheConnectionDrops checks that a node whose
// connection Control drops reconnects within its first backoff step, not
// at its next heartbeat: here heartbeats are an hour apart.
func TestReconnectsWhenTheConnectionDrops(t *testing.T) {
	var accepts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, ok := acceptWatch(w, r)
		if !ok {
			return
		}
		accepts.Add(1)
		data, _ := json.Marshal(bridge.Message{Type: bridge.Snapshot, Revision: 1, Items: []bridge.Item{{Key: "self", Self: &bridge.Self{Name: "n"}}}})
		ws.Write(r.Context(), websocket.MessageText, data)
		ws.CloseNow() // the connection drops, no close handshake
	}))
	defer srv.Close()
	defer runEnrolledNode(t, srv.URL, "Agent")()
	deadline := time.Now().Add(20 * time.Second)
	for accepts.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("connections: got %d in 20s, want the node to come back after each drop", accepts.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRegistrationLeavesNoIdleConnection checks that a node closes its
// registration connection rather than keeping it open beside the watch.
func TestRegistrationLeavesNoIdleConnection(t *testing.T) {
	var closed atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case bridge.RegisterPath:
			json.NewEncoder(w).Encode(bridge.RegisterResponse{Name: "n", Credential: "kkt_n.secret"})
		default:
			<-r.Context().Done() // a watch that never answers
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateClosed {
			closed.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	key, _ := wgnet.GeneratePrivateKey()
	c, err := New(Config{ControlURL: srv.URL, APIKey: "kka_k.s", Kind: "Agent", Name: "n", PublicKey: key.PublicKey(), StateDir: t.TempDir(),
		Apply: func(bridge.Slice) error { return nil }, Status: func() bridge.NodeStatus { return bridge.NodeStatus{} }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); srv.CloseClientConnections(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for closed.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the registration connection is still open after 10s, want it closed once answered")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestHeartbeatAtOnceForAChallenge: a gateway that receives an ACME
// challenge reports its new revision at once, not at its next heartbeat
// (an hour away here): Control waits for that report before it lets the
// CA validate. Other changes wait for the regular heartbeat.
func TestHeartbeatAtOnceForAChallenge(t *testing.T) {
	beats := make(chan int64, 16)
	send := make(chan bridge.Message)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, ok := acceptWatch(w, r)
		if !ok {
			return
		}
		defer ws.CloseNow()
		ctx := r.Context()
		go func() {
			for {
				_, data, err := ws.Read(ctx)
				if err != nil {
					return
				}
				var m bridge.Message
				if json.Unmarshal(data, &m) == nil && m.Type == bridge.Heartbeat && m.Status != nil {
					beats <- m.Status.Revision
				}
			}
		}()
		for {
			select {
			case m := <-send:
				data, _ := json.Marshal(m)
				ws.Write(ctx, websocket.MessageText, data)
			case <-ctx.Done():
				return
			}
		}
	}))
	defer srv.Close()
	defer runEnrolledNode(t, srv.URL, "Gateway")()

	send <- bridge.Message{Type: bridge.Snapshot, Revision: 1, Items: []bridge.Item{{Key: "self", Self: &bridge.Self{Name: "n"}}}}
	waitBeat := func(want int64, within time.Duration) bool {
		deadline := time.After(within)
		for {
			select {
			case rev := <-beats:
				if rev == want {
					return true
				}
			case <-deadline:
				return false
			}
		}
	}
	// The first heartbeat goes when the watch starts; it may or may not
	// have seen revision 1 yet.
	waitBeat(1, time.Second)
	send <- bridge.Message{Type: bridge.Delta, Revision: 2, Items: []bridge.Item{{Key: "route/a.example.com", Route: &bridge.Route{Hostname: "a.example.com", Tunnel: "a", Protocol: "http", Agent: "x"}}}}
	if waitBeat(2, 500*time.Millisecond) {
		t.Fatal("a heartbeat went at once for a change that brings no challenge")
	}
	send <- bridge.Message{Type: bridge.Delta, Revision: 3, Items: []bridge.Item{{Key: bridge.ChallengeKey("tok"),
		Challenge: &bridge.Challenge{Hostname: "a.example.com", Token: "tok", KeyAuthorization: "tok.thumb"}}}}
	if !waitBeat(3, 5*time.Second) {
		t.Fatal("no heartbeat with revision 3 within 5 s of a challenge; want one at once")
	}
}

// runEnrolledNode runs a client of kind "n", already holding a credential,
// against controlURL with heartbeats an hour apart; the returned func
// stops it.
func runEnrolledNode(t *testing.T, controlURL, kind string) (stop func()) {
	t.Helper()
	return runNodeWithStatus(t, controlURL, kind, func() bridge.NodeStatus { return bridge.NodeStatus{} }, time.Hour)
}

// runNodeWithStatus runs a client of kind "n", already holding a
// credential, against controlURL, reporting status() every interval; the
// returned func stops it.
func runNodeWithStatus(t *testing.T, controlURL, kind string, status func() bridge.NodeStatus, interval time.Duration) (stop func()) {
	t.Helper()
	dir := t.TempDir()
	if err := SaveCredential(dir, "kkt_n.secret"); err != nil {
		t.Fatal(err)
	}
	key, _ := wgnet.GeneratePrivateKey()
	c, err := New(Config{ControlURL: controlURL, Kind: kind, Name: "n", PublicKey: key.PublicKey(), StateDir: dir,
		Apply: func(bridge.Slice) error { return nil }, Status: status, HeartbeatInterval: interval})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	return func() { cancel(); <-done }
}

// TestChangesFollowsTheMessages: a node that keeps its own slice gets
// each Snapshot and Delta as Control sent it, once its digest checks; a
// delta whose digest does not match is not given, and the node asks for a
// snapshot again. Restarted with Control away, it gets the slice saved on
// disk as a Snapshot.
func TestChangesFollowsTheMessages(t *testing.T) {
	self := bridge.Item{Key: "self", Self: &bridge.Self{Name: "n"}}
	peer := func(name string) bridge.Item {
		return bridge.Item{Key: "peer/" + name, Peer: &bridge.Peer{Name: name, Endpoint: "192.0.2.1:51820"}}
	}
	first := bridge.Slice{"self": self, "peer/a": peer("a")}
	second := bridge.Slice{"self": self, "peer/b": peer("b")}
	var watches atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, ok := acceptWatch(w, r)
		if !ok {
			return
		}
		defer ws.CloseNow()
		send := func(m bridge.Message) {
			data, _ := json.Marshal(m)
			ws.Write(r.Context(), websocket.MessageText, data)
		}
		if watches.Add(1) == 1 {
			send(bridge.Message{Type: bridge.Snapshot, Revision: 1, Items: first.Items(), Digest: first.Digest()})
			// A delta that does not lead to its digest: a gap.
			send(bridge.Message{Type: bridge.Delta, Revision: 2, Items: []bridge.Item{peer("c")}, Digest: first.Digest()})
			<-r.Context().Done()
			return
		}
		send(bridge.Message{Type: bridge.Snapshot, Revision: 2, Items: first.Items(), Digest: first.Digest()})
		send(bridge.Message{Type: bridge.Delta, Revision: 3, Items: []bridge.Item{peer("b")}, Deleted: []string{"peer/a"}, Digest: second.Digest()})
		<-r.Context().Done()
	}))
	defer srv.Close()
	dir := t.TempDir()
	if err := SaveCredential(dir, "kkt_n.secret"); err != nil {
		t.Fatal(err)
	}
	key, _ := wgnet.GeneratePrivateKey()
	got := make(chan bridge.Message, 16)
	run := func(controlURL string) (stop func()) {
		c, err := New(Config{ControlURL: controlURL, Kind: "Gateway", Name: "n", PublicKey: key.PublicKey(), StateDir: dir,
			Changes: func(m bridge.Message) error { got <- m; return nil }, Status: func() bridge.NodeStatus { return bridge.NodeStatus{} },
			HeartbeatInterval: time.Hour, MaxBackoff: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		return func() { cancel(); srv.CloseClientConnections(); <-done }
	}
	next := func() bridge.Message {
		t.Helper()
		select {
		case m := <-got:
			return m
		case <-time.After(10 * time.Second):
			t.Fatal("no message within 10 s")
			return bridge.Message{}
		}
	}
	stop := run(srv.URL)
	for _, want := range []struct {
		typ bridge.MessageType
		rev int64
		sl  bridge.Slice
	}{
		{bridge.Snapshot, 1, first}, // the delta with the wrong digest is not given
		{bridge.Snapshot, 2, first},
		{bridge.Delta, 3, nil},
	} {
		m := next()
		if m.Type != want.typ || m.Revision != want.rev {
			t.Fatalf("got %s at revision %d, want %s at %d", m.Type, m.Revision, want.typ, want.rev)
		}
		if want.sl != nil && len(m.Items) != len(want.sl) {
			t.Fatalf("%s at revision %d: got %d items, want %d", m.Type, m.Revision, len(m.Items), len(want.sl))
		}
		if m.Type == bridge.Delta && (len(m.Items) != 1 || m.Items[0].Key != "peer/b" || len(m.Deleted) != 1 || m.Deleted[0] != "peer/a") {
			t.Fatalf("delta: got items %v deleted %v, want peer/b, and peer/a deleted", m.Items, m.Deleted)
		}
	}
	stop()

	// Control is away: the saved slice comes as a Snapshot.
	stop = run("http://127.0.0.1:1")
	defer stop()
	m := next()
	saved, err := (bridge.Slice{}).Apply(m)
	if m.Type != bridge.Snapshot || m.Revision != 3 || err != nil || saved.Digest() != second.Digest() {
		t.Fatalf("from disk: got %s at revision %d with %d items (%v), want the Snapshot of revision 3 with self and peer/b", m.Type, m.Revision, len(m.Items), err)
	}
}

// acceptWatch answers a node's watch request with a WebSocket, as Control
// does, and anything else with 404.
func acceptWatch(w http.ResponseWriter, r *http.Request) (*websocket.Conn, bool) {
	if r.URL.Path != bridge.WatchPath {
		http.NotFound(w, r)
		return nil, false
	}
	ws, err := websocket.Accept(w, r, nil)
	return ws, err == nil
}
