package bridgeserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/api/bridge"
	"github.com/kakuremichi/kakuremichi/internal/wgnet"
)

// rawGateway registers gateway name with an API key and opens its watch
// by hand, so that a test can send whatever heartbeats it likes. It
// returns the connection and Control's first message.
func rawGateway(t *testing.T, c *ctlPlane, name string) (*websocket.Conn, bridge.Message) {
	t.Helper()
	key, _ := wgnet.GeneratePrivateKey()
	body, _ := json.Marshal(bridge.RegisterRequest{Kind: "Gateway", Name: name, PublicKey: key.PublicKey().String(), PublicEndpoint: "127.0.0.1:51820"})
	req, _ := http.NewRequest("POST", c.url()+bridge.RegisterPath, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+c.apiKey(name+"-key", api.RoleGateway, 1))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var reg bridge.RegisterResponse
	json.NewDecoder(resp.Body).Decode(&reg)
	resp.Body.Close()
	if resp.StatusCode != 200 || reg.Credential == "" {
		t.Fatalf("register %s: %d", name, resp.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+c.addr+bridge.WatchPath, &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + reg.Credential}}})
	if err != nil {
		t.Fatal(err)
	}
	ws.SetReadLimit(bridge.MaxMessageBytes)
	t.Cleanup(func() { ws.CloseNow() })
	_, data, err := ws.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var first bridge.Message
	if err := json.Unmarshal(data, &first); err != nil {
		t.Fatal(err)
	}
	// Keep reading, as a node does, so that pings are answered.
	go func() {
		for {
			if _, _, err := ws.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	return ws, first
}

func sendBeat(t *testing.T, ws *websocket.Conn, m bridge.Message) error {
	t.Helper()
	m.Type = bridge.Heartbeat
	data, _ := json.Marshal(m)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return ws.Write(ctx, websocket.MessageText, data)
}

// TestStatusChangesBuildTheStatus: Control says on its first message that
// it takes status changes, and the status it records is the whole status
// with every change since applied: a probe failing, an agent leaving,
// another coming, a route added.
func TestStatusChangesBuildTheStatus(t *testing.T) {
	c := startControl(t)
	ws, first := rawGateway(t, c, "gw")
	if !first.AcceptsChanges {
		t.Fatalf("Control's first message %+v: want acceptsChanges", first)
	}
	whole := bridge.NodeStatus{Version: "test", Revision: first.Revision, Routes: []string{"a.example.com"}, ReportedForm: true,
		Peers:  []bridge.PeerStatus{{Name: "a1", Connected: true}, {Name: "a2", Connected: true}, {Name: "a3"}},
		Probes: []bridge.ProbeStatus{{Agent: "a1", OK: true}, {Agent: "a2", OK: true}}}
	if err := sendBeat(t, ws, bridge.Message{Status: &whole}); err != nil {
		t.Fatal(err)
	}
	changes := []bridge.StatusChanges{
		{Version: "test", Revision: first.Revision, Probes: []bridge.ProbeStatus{{Agent: "a2", Message: "dial: i/o timeout"}}},
		{Version: "test", Revision: first.Revision},
		{Version: "test", Revision: first.Revision, PeersGone: []string{"a1"}, ProbesGone: []string{"a1"},
			Peers: []bridge.PeerStatus{{Name: "a4", Connected: true}}, Routes: []string{"b.example.com"}},
	}
	for _, ch := range changes {
		if err := sendBeat(t, ws, bridge.Message{Changes: &ch}); err != nil {
			t.Fatal(err)
		}
	}
	want := []api.NodePeerStatus{{Name: "a2", Connected: true, Probe: "failed: dial: i/o timeout"}, {Name: "a3"}, {Name: "a4", Connected: true}}
	var gw api.Gateway
	eventually(t, "the status with every change applied", 10*time.Second, func() bool {
		code, out := c.call("GET", apiBase+"/gateways/gw", "")
		gw = api.Gateway{}
		json.Unmarshal(out, &gw)
		return code == 200 && fmt.Sprint(gw.Status.Agents) == fmt.Sprint(want) && gw.Status.Routes == 2
	})
}

// TestStatusChangesOutOfTurnEndTheConnection: changes with no whole
// status before them on the connection, or that would make a list longer
// than Control keeps, are refused: the connection ends, and what was
// recorded stays.
func TestStatusChangesOutOfTurnEndTheConnection(t *testing.T) {
	c := startControl(t)
	closed := func(ws *websocket.Conn) bool {
		// A write after Control closed fails once the close is seen.
		for range 50 {
			if sendBeat(t, ws, bridge.Message{Changes: &bridge.StatusChanges{}}) != nil {
				return true
			}
			time.Sleep(100 * time.Millisecond)
		}
		return false
	}
	ws, _ := rawGateway(t, c, "early")
	if err := sendBeat(t, ws, bridge.Message{Changes: &bridge.StatusChanges{Peers: []bridge.PeerStatus{{Name: "a"}}}}); err != nil {
		t.Fatal(err)
	}
	if !closed(ws) {
		t.Fatal("changes before any whole status: the connection stayed open")
	}

	ws, first := rawGateway(t, c, "big")
	whole := bridge.NodeStatus{Version: "test", Revision: first.Revision, Peers: []bridge.PeerStatus{{Name: "a", Connected: true}}}
	if err := sendBeat(t, ws, bridge.Message{Status: &whole}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the whole status recorded", 10*time.Second, func() bool {
		code, out := c.call("GET", apiBase+"/gateways/big", "")
		var gw api.Gateway
		json.Unmarshal(out, &gw)
		return code == 200 && len(gw.Status.Agents) == 1
	})
	var many bridge.StatusChanges
	for i := range 1<<17 + 1 {
		many.Routes = append(many.Routes, fmt.Sprintf("h%d", i))
	}
	if err := sendBeat(t, ws, bridge.Message{Changes: &many}); err != nil {
		t.Fatal(err)
	}
	if !closed(ws) {
		t.Fatal("changes past the longest list Control keeps: the connection stayed open")
	}
	code, out := c.call("GET", apiBase+"/gateways/big", "")
	var gw api.Gateway
	json.Unmarshal(out, &gw)
	if code != 200 || len(gw.Status.Agents) != 1 || gw.Status.Routes != 0 {
		t.Fatalf("after the refused changes: %d, agents %+v, routes %d; want the status recorded before", code, gw.Status.Agents, gw.Status.Routes)
	}
}
