package store

import (
	"fmt"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

// BenchmarkUpdateStatus writes a heartbeat's status to a gateway that
// lists 1,000 agents, as the bridge does, with UpdateStatus and with the
// JSON path it replaced for kinds with a Status field (the baseline, in
// the same run), and reports the ratio of their times per write.
//
//	go test -run XXX -bench UpdateStatus ./store
func BenchmarkUpdateStatus(b *testing.B) {
	s := openTestStore(b, Config{})
	ctx := testContext(b)
	gw := &api.Gateway{Metadata: api.ObjectMeta{Name: "gw"}}
	mustCreate(b, s, gw)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range 1000 {
		ts := now.Add(-time.Duration(i) * time.Second)
		gw.Status.Agents = append(gw.Status.Agents, api.NodePeerStatus{Name: fmt.Sprintf("agent-%04d", i),
			Endpoint: fmt.Sprintf("203.0.113.%d:51820", i%250), LastHandshake: &ts, Probe: "ok"})
	}
	paths := []struct {
		name  string
		write func(api.Object) (api.Object, error)
		per   time.Duration
	}{
		{name: "status-field", write: func(o api.Object) (api.Object, error) { return s.UpdateStatus(ctx, o, WriteOptions{}) }},
		{name: "json", write: func(o api.Object) (api.Object, error) { return s.updateStatusJSON(ctx, o, WriteOptions{}) }},
	}
	beat := 0
	for b.Loop() {
		for i := range paths {
			cur, err := s.Get(ctx, "gateways", "gw")
			if err != nil {
				b.Fatal(err)
			}
			g := cur.(*api.Gateway)
			g.Status.Agents = gw.Status.Agents
			beat++
			ts := now.Add(time.Duration(beat) * time.Second)
			g.Status.LastHeartbeat = &ts
			start := time.Now()
			if _, err := paths[i].write(g); err != nil {
				b.Fatal(err)
			}
			paths[i].per += time.Since(start)
		}
	}
	for _, p := range paths {
		b.ReportMetric(float64(p.per.Microseconds())/float64(b.N), p.name+"-µs/write")
	}
	b.ReportMetric(float64(paths[1].per)/float64(paths[0].per), "speedup")
}
