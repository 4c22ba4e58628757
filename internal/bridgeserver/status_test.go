package bridgeserver

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

// TestStatusCopyLeavesTheCacheAlone checks that what recordStatus does to
// a status copy (new fields, new peer lists, a condition set) does not
// reach the cached node it was made from.
func TestStatusCopyLeavesTheCacheAlone(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ag := &api.Agent{Metadata: api.ObjectMeta{Name: "ag", ResourceVersion: "7"}}
	ag.Status.LastHeartbeat = &now
	ag.Status.Gateways = []api.NodePeerStatus{{Name: "gw"}}
	ag.Status.Targets = []api.TargetStatus{{Tunnel: "web", Reachable: true}}
	ag.Status.Conditions = []api.Condition{{Type: api.NodeConnected, Status: api.ConditionFalse, Reason: "Disconnected"}}
	gw := &api.Gateway{Metadata: api.ObjectMeta{Name: "gw", ResourceVersion: "8"}}
	gw.Status.Agents = []api.NodePeerStatus{{Name: "ag", Probe: "ok"}}
	gw.Status.Conditions = []api.Condition{{Type: api.NodeConnected, Status: api.ConditionFalse, Reason: "Disconnected"}}
	for _, cached := range []api.Object{ag, gw} {
		before, _ := json.Marshal(cached)
		c := statusCopy(cached)
		later := now.Add(time.Minute)
		switch n := c.(type) {
		case *api.Agent:
			n.Status.LastHeartbeat, n.Status.Version = &later, "v2"
			n.Status.Gateways = nil
			n.Status.Targets = append(n.Status.Targets[:0:0], api.TargetStatus{Tunnel: "web"})
		case *api.Gateway:
			n.Status.LastHeartbeat, n.Status.Routes = &later, 3
			n.Status.Agents = nil
		}
		api.SetCondition(&c.GetStatus().Conditions, api.Condition{Type: api.NodeConnected, Status: api.ConditionTrue,
			Reason: api.ReasonHeartbeat}, later)
		if after, _ := json.Marshal(cached); string(after) != string(before) {
			t.Errorf("%s: the cached node changed:\nbefore %s\nafter  %s", cached.GetMeta().Name, before, after)
		}
		if got := api.FindCondition(c.GetStatus().Conditions, api.NodeConnected).Status; got != api.ConditionTrue {
			t.Errorf("%s: the copy's Connected: got %s, want True", cached.GetMeta().Name, got)
		}
	}
}

// TestStripPeerListsKeepsWhatSlicesRead: the bridge's cache of nodes
// drops their peer lists and target reports, and keeps their specs,
// addresses and conditions; the object given is left alone.
func TestStripPeerListsKeepsWhatSlicesRead(t *testing.T) {
	gw := &api.Gateway{Metadata: api.ObjectMeta{Name: "gw", ResourceVersion: "5"}, Spec: api.GatewaySpec{PublicEndpoint: "192.0.2.1:51820"}}
	gw.Status.OverlayAddress, gw.Status.Routes = "100.64.0.1", 3
	gw.Status.Agents = []api.NodePeerStatus{{Name: "a", Connected: true}}
	gw.Status.Conditions = []api.Condition{{Type: api.NodeConnected, Status: api.ConditionTrue}}
	got := stripPeerLists(gw).(*api.Gateway)
	if got.Status.Agents != nil || got.Status.OverlayAddress != "100.64.0.1" || got.Status.Routes != 3 ||
		got.Spec != gw.Spec || got.Metadata.ResourceVersion != "5" || len(got.Status.Conditions) != 1 {
		t.Fatalf("stripped gateway: %+v", got)
	}
	if len(gw.Status.Agents) != 1 {
		t.Fatal("the gateway given lost its agents")
	}
	ag := &api.Agent{Metadata: api.ObjectMeta{Name: "ag"}}
	ag.Status.OverlayAddress = "100.64.0.2"
	ag.Status.Gateways = []api.NodePeerStatus{{Name: "gw"}}
	ag.Status.Targets = []api.TargetStatus{{Tunnel: "t", Reachable: true}}
	if a := stripPeerLists(ag).(*api.Agent); a.Status.Gateways != nil || a.Status.Targets != nil || a.Status.OverlayAddress != "100.64.0.2" {
		t.Fatalf("stripped agent: %+v", a.Status)
	}
	tn := &api.Tunnel{Metadata: api.ObjectMeta{Name: "t"}}
	if stripPeerLists(tn) != api.Object(tn) {
		t.Fatal("a tunnel was copied; want it as it is")
	}
}
