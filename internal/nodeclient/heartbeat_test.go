package nodeclient

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/kakuremichi/kakuremichi/api/bridge"
)

// beat is one heartbeat as Control received it.
type beat struct {
	msg  bridge.Message
	size int
}

// heartbeatServer is a Control that sends a snapshot, saying whether it
// takes status changes, and records the heartbeats it gets.
func heartbeatServer(t *testing.T, acceptsChanges bool) (url string, beats <-chan beat) {
	ch := make(chan beat, 1024)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, ok := acceptWatch(w, r)
		if !ok {
			return
		}
		defer ws.CloseNow()
		ws.SetReadLimit(bridge.MaxMessageBytes)
		ctx := r.Context()
		data, _ := json.Marshal(bridge.Message{Type: bridge.Snapshot, Revision: 1, AcceptsChanges: acceptsChanges,
			Items: []bridge.Item{{Key: "self", Self: &bridge.Self{Name: "n"}}}})
		ws.Write(ctx, websocket.MessageText, data)
		for {
			_, data, err := ws.Read(ctx)
			if err != nil {
				return
			}
			var m bridge.Message
			if json.Unmarshal(data, &m) == nil && m.Type == bridge.Heartbeat {
				select {
				case ch <- beat{m, len(data)}:
				default:
				}
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL, ch
}

func next(t *testing.T, beats <-chan beat) beat {
	t.Helper()
	select {
	case b := <-beats:
		return b
	case <-time.After(10 * time.Second):
		t.Fatal("no heartbeat within 10 s")
		return beat{}
	}
}

// TestHeartbeatsSendOnlyWhatChanged: where Control takes status changes,
// a gateway of 2,000 agents whose sessions renew and counters move sends
// its status whole once, in reported form, and then heartbeats of a few
// bytes; a probe failing and an agent leaving come as changes, and
// applying every heartbeat gives what the gateway reports.
func TestHeartbeatsSendOnlyWhatChanged(t *testing.T) {
	url, beats := heartbeatServer(t, true)
	var mu sync.Mutex
	agents, failing := 2000, false
	status := func() bridge.NodeStatus {
		mu.Lock()
		defer mu.Unlock()
		now := time.Now()
		var st bridge.NodeStatus
		for i := range agents {
			name := fmt.Sprintf("agent-%05d", i)
			st.Peers = append(st.Peers, bridge.PeerStatus{Name: name, Endpoint: "192.0.2.1:40000",
				LastHandshake: now.Add(-time.Duration(i%100) * time.Second), RxBytes: now.UnixNano()})
			st.Probes = append(st.Probes, bridge.ProbeStatus{Agent: name, OK: true, LatencyMS: float64(now.Nanosecond()), CheckedAt: now})
		}
		if failing {
			st.Probes[7] = bridge.ProbeStatus{Agent: "agent-00007", Message: "dial: i/o timeout", CheckedAt: now}
		}
		return st
	}
	defer runNodeWithStatus(t, url, "Gateway", status, 20*time.Millisecond)()

	first := next(t, beats)
	if first.msg.Status == nil || first.msg.Changes != nil {
		t.Fatalf("first heartbeat: %+v; want a whole status", first.msg)
	}
	held := *first.msg.Status
	if len(held.Peers) != agents || !held.Peers[0].Connected || !held.Peers[0].LastHandshake.IsZero() || held.Peers[0].RxBytes != 0 ||
		held.Probes[0].LatencyMS != 0 || !held.Probes[0].CheckedAt.IsZero() {
		t.Fatalf("first heartbeat: peer %+v, probe %+v; want %d peers in reported form", held.Peers[0], held.Probes[0], agents)
	}
	for range 10 {
		b := next(t, beats)
		if b.msg.Status != nil || b.msg.Changes == nil || !b.msg.Changes.Empty() || b.size > 100 {
			t.Fatalf("heartbeat with nothing shown changed: %d bytes, %+v; want empty changes of under 100 bytes", b.size, b.msg)
		}
		held = held.Apply(*b.msg.Changes)
	}
	mu.Lock()
	failing, agents = true, agents-1
	mu.Unlock()
	want := status().Reported(time.Now())
	deadline := time.Now().Add(10 * time.Second)
	for !reflect.DeepEqual(held.Probes, want.Probes) || !reflect.DeepEqual(held.Peers, want.Peers) {
		if time.Now().After(deadline) {
			t.Fatal("the failed probe and the agent gone: not in the heartbeats' changes within 10 s")
		}
		b := next(t, beats)
		if b.msg.Changes == nil {
			t.Fatalf("a heartbeat after the first: %+v; want changes", b.msg)
		}
		held = held.Apply(*b.msg.Changes)
	}
}

// TestHeartbeatsWholeWhereControlTakesNoChanges: a Control that does not
// say it takes status changes gets every heartbeat whole, as the node
// sees it.
func TestHeartbeatsWholeWhereControlTakesNoChanges(t *testing.T) {
	url, beats := heartbeatServer(t, false)
	hs := time.Now().Add(-time.Minute)
	defer runNodeWithStatus(t, url, "Gateway", func() bridge.NodeStatus {
		return bridge.NodeStatus{Peers: []bridge.PeerStatus{{Name: "a", LastHandshake: hs, RxBytes: 5}}}
	}, 20*time.Millisecond)()
	for range 5 {
		b := next(t, beats)
		if b.msg.Status == nil || b.msg.Changes != nil || len(b.msg.Status.Peers) != 1 ||
			!b.msg.Status.Peers[0].LastHandshake.Equal(hs) || b.msg.Status.Peers[0].RxBytes != 5 {
			t.Fatalf("heartbeat to a Control without changes: %+v; want the whole status as reported", b.msg)
		}
	}
}
