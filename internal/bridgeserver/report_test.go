package bridgeserver

import (
	"reflect"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api/bridge"
)

// volatile are the heartbeat fields sameReport does not compare; every
// other field of bridge.NodeStatus and of its lists' elements is.
var volatile = map[string]bool{
	"PeerStatus.LastHandshake": true, // compared only as set or not
	"PeerStatus.RxBytes":       true,
	"PeerStatus.TxBytes":       true,
	"TargetStatus.CheckedAt":   true,
	"ProbeStatus.LatencyMS":    true,
	"ProbeStatus.CheckedAt":    true,
}

// TestSameReportComparesEveryOtherField changes each field of a full
// heartbeat in turn, top-level and in each list's element, and checks
// that sameReport tells the two apart unless the field is volatile: a
// field added to the protocol is compared unless listed here.
func TestSameReportComparesEveryOtherField(t *testing.T) {
	base := func() bridge.NodeStatus {
		at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		return bridge.NodeStatus{Version: "v1", DataPath: "netstack", Revision: 7, Routes: []string{"a.example.com"},
			Peers:   []bridge.PeerStatus{{Name: "p", Endpoint: "192.0.2.1:51820", LastHandshake: at, RxBytes: 1, TxBytes: 2}},
			Targets: []bridge.TargetStatus{{Tunnel: "t", Reachable: true, Message: "m", CheckedAt: at}},
			Probes:  []bridge.ProbeStatus{{Agent: "a", OK: true, Message: "m", LatencyMS: 1.5, CheckedAt: at}}}
	}
	a := base()
	b := base()
	if !sameReport(&a, &b) {
		t.Fatal("two equal heartbeats: got different")
	}
	// change sets v, a field's value, to something else.
	change := func(v reflect.Value) {
		switch v.Kind() {
		case reflect.String:
			v.SetString(v.String() + "x")
		case reflect.Int64, reflect.Int:
			v.SetInt(v.Int() + 1)
		case reflect.Float64:
			v.SetFloat(v.Float() + 1)
		case reflect.Bool:
			v.SetBool(!v.Bool())
		case reflect.Struct: // time.Time
			v.Set(reflect.ValueOf(v.Interface().(time.Time).Add(time.Minute)))
		case reflect.Slice:
			v.Set(reflect.Zero(v.Type()))
		default:
			t.Fatalf("no way to change a %s", v.Type())
		}
	}
	check := func(name string, mutate func(*bridge.NodeStatus)) {
		b := base()
		mutate(&b)
		if got, want := sameReport(&a, &b), volatile[name]; got != want {
			t.Errorf("%s changed: sameReport = %v, want %v", name, got, want)
		}
	}
	top := reflect.TypeOf(bridge.NodeStatus{})
	for i := range top.NumField() {
		f := top.Field(i)
		check("NodeStatus."+f.Name, func(s *bridge.NodeStatus) { change(reflect.ValueOf(s).Elem().Field(i)) })
		if f.Type.Kind() != reflect.Slice || f.Type.Elem().Kind() != reflect.Struct {
			continue
		}
		for j := range f.Type.Elem().NumField() {
			ef := f.Type.Elem().Field(j)
			check(f.Type.Elem().Name()+"."+ef.Name, func(s *bridge.NodeStatus) {
				change(reflect.ValueOf(s).Elem().Field(i).Index(0).Field(j))
			})
		}
	}
	// A handshake for the first time is news.
	b = base()
	a.Peers[0].LastHandshake = time.Time{}
	if sameReport(&a, &b) {
		t.Error("a peer's first handshake: got the same report")
	}
}
