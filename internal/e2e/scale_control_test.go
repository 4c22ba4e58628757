package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unique"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/api/bridge"
	"github.com/kakuremichi/kakuremichi/internal/nodeclient"
	"github.com/kakuremichi/kakuremichi/internal/wgnet"
)

// TestControlScaleSmall connects 200 simulated agents and 20 simulated
// gateways, each a real nodeclient speaking the bridge protocol, to one
// Control, and checks that every node gets its whole slice, that a tunnel
// reaches every gateway, and that after a Control restart every node is
// back with nothing left behind. It asserts correctness only; the timed
// run at full size is BenchmarkControlScale.
func TestControlScaleSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Control and 220 simulated nodes")
	}
	r := runControlScale(t, 200, 20, 1)
	t.Logf("%s", r)
}

// BenchmarkControlScale measures Control with a fleet of simulated nodes
// (real nodeclients in this process, one WebSocket each): how long a new
// tunnel takes from the API's acknowledgement to the delta carrying its
// route at every gateway, how long the fleet takes to settle after a
// Control restart, and Control's memory and CPU. Sizes come from
// KAKUREMICHI_SCALE_AGENTS and KAKUREMICHI_SCALE_GATEWAYS (10000 and 1000
// by default), rounds of tunnel propagation from KAKUREMICHI_SCALE_ROUNDS
// (3). KAKUREMICHI_SCALE_CONTROL_LOG names a file to keep Control's log
// in, whether the run passes or fails. KAKUREMICHI_SCALE_IDLE is the idle window in seconds (60), over
// which Control's CPU and the growth of its store's database are
// measured. With KAKUREMICHI_SCALE_FULL_STATUS=1 every node reports what a
// real node does: each peer in its slice, with its endpoint and latest
// handshake (every two minutes) and, from a gateway, a probe of each
// agent. Run it with:
//
//	go test -run XXX -bench ControlScale -benchtime 1x -timeout 60m ./internal/e2e
//
// Each simulated node keeps of its slice only the keys and counts
// (nodeclient's Changes) beside the client's interned encoding, so the
// default 10,000 × 1,000 runs on two cores and 24 GB: about four minutes,
// with this process at about 5 GB and Control at about 2 GB. The
// simulated nodes send heartbeats with an empty status: a real gateway's
// lists every agent's peer and probe (up to 1,000 in full, the rest by
// name and probe), which this fleet leaves out unless asked to.
func BenchmarkControlScale(b *testing.B) {
	agents := envInt("KAKUREMICHI_SCALE_AGENTS", 10000)
	gateways := envInt("KAKUREMICHI_SCALE_GATEWAYS", 1000)
	rounds := envInt("KAKUREMICHI_SCALE_ROUNDS", 3)
	if fullStatus {
		// Eleven thousand simulated nodes each hold what a real node holds
		// of its peers (its status, and the copy its client diffs the next
		// against): at 10,000 x 1,000 some 5 GB live, which the collector's
		// default pacing lets grow to twice that, beside Control on the
		// same machine. A tighter pacing costs this process CPU, not
		// Control.
		defer debug.SetGCPercent(debug.SetGCPercent(25))
	}
	for i := 0; i < b.N; i++ {
		r := runControlScale(b, agents, gateways, rounds)
		b.Logf("%s", r)
		b.ReportMetric(ms(r.propagation[len(r.propagation)/2]), "p50-ms")
		b.ReportMetric(ms(r.propagation[len(r.propagation)*99/100]), "p99-ms")
		b.ReportMetric(ms(r.propagation[len(r.propagation)-1]), "max-ms")
		b.ReportMetric(r.settle.Seconds(), "settle-s")
		b.ReportMetric(float64(r.rssKiB)/1024, "control-rss-MiB")
		b.ReportMetric(r.dbGrowth, "idle-db-MiB/s")
		b.ReportMetric(r.idleWrites, "idle-writes/s")
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// raiseFileLimit lifts this process's open-file limit to its hard limit;
// processes it starts inherit it.
func raiseFileLimit(tb testing.TB, need int) {
	tb.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Fatal(err)
	}
	// Root may raise the hard limit too; anyone may raise the soft one.
	if want := uint64(2 * need); lim.Max < want {
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: want, Max: want}); err == nil {
			lim.Max = want
		}
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Fatal(err)
	}
	if lim.Cur < uint64(need) {
		tb.Skipf("the open-file limit is %d; this run needs %d", lim.Cur, need)
	}
}

// simNode is one simulated node: a real nodeclient that hands it each
// Snapshot and Delta (nodeclient's Changes), and that keeps of its slice
// only the keys, and counts. A delta costs it only its own items: a
// thousand gateways of ten thousand peers each share this process's cores
// with Control, and copying or counting whole slices on every delta would
// be what the run measures.
type simNode struct {
	kind, name string
	client     *nodeclient.Client

	mu        sync.Mutex
	keys      map[unique.Handle[string]]struct{} // the slice's keys
	peers     int                                // peer items
	addressed bool                               // the slice's self has an address
	routes    int                                // route items
	syncedAt  time.Time                          // last Snapshot, Delta or UpToDate
	firstSync chan struct{}
	seen      map[string]time.Time // watched route key -> first seen

	// With fullStatus, the status last built and when, and whether the
	// slice's peers changed since.
	built        bridge.NodeStatus
	builtAt      time.Time
	peersChanged bool
}

func (n *simNode) apply(m bridge.Message, watched func() []string) error {
	now := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	if m.Type == bridge.Snapshot || n.keys == nil {
		n.keys = map[unique.Handle[string]]struct{}{}
		n.peers, n.routes, n.addressed = 0, 0, false
	}
	count := func(k string, by int) {
		switch {
		case strings.HasPrefix(k, "peer/"):
			n.peers += by
			n.peersChanged = true
		case strings.HasPrefix(k, "route/"):
			n.routes += by
		case k == "self" && by < 0:
			n.addressed = false
		}
	}
	for _, k := range m.Deleted {
		h := unique.Make(k)
		if _, ok := n.keys[h]; ok {
			delete(n.keys, h)
			count(k, -1)
		}
	}
	for _, it := range m.Items {
		h := unique.Make(it.Key)
		if _, ok := n.keys[h]; !ok {
			n.keys[h] = struct{}{}
			count(it.Key, 1)
		}
		if it.Key == "self" {
			n.addressed = it.Self != nil && it.Self.Address.IsValid()
		}
	}
	for _, k := range watched() {
		if _, ok := n.seen[k]; !ok {
			if _, ok := n.keys[unique.Make(k)]; ok {
				n.seen[k] = now
			}
		}
	}
	return nil
}

// counts returns what the node's slice holds: peers, whether it has its
// address, and routes.
func (n *simNode) counts() (peers int, addressed bool, routes int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.peers, n.addressed, n.routes
}

// fullStatus is KAKUREMICHI_SCALE_FULL_STATUS: the simulated nodes report
// their peers and probes.
var fullStatus = os.Getenv("KAKUREMICHI_SCALE_FULL_STATUS") != ""

// statusRefresh is how often a simulated node renews the handshake times
// it reports: well within api.SessionFresh, so every session stays
// current, as a real node's do.
const statusRefresh = 30 * time.Second

// status is a simulated node's heartbeat status: empty, or with
// fullStatus what a real node of its kind reports: a peer for every node
// of the other kind in its slice, whose handshake is renewed every two
// minutes, each at its own moment, and, from a gateway, a probe of every
// agent. The node rebuilds it when its slice's peers change or its times
// are due; between, every heartbeat gets the same (nodeclient copies
// what it sends), as a real node's listing of an unchanged device costs
// it little.
func (n *simNode) status() bridge.NodeStatus {
	if !fullStatus {
		return bridge.NodeStatus{}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	now := time.Now()
	if !n.peersChanged && now.Sub(n.builtAt) < statusRefresh {
		return n.built
	}
	n.peersChanged, n.builtAt = false, now
	names := make([]string, 0, n.peers)
	for h := range n.keys {
		if k := h.Value(); strings.HasPrefix(k, "peer/") {
			names = append(names, k[len("peer/"):])
		}
	}
	slices.Sort(names)
	st := bridge.NodeStatus{Peers: make([]bridge.PeerStatus, len(names))}
	if n.kind == "Gateway" {
		st.Probes = make([]bridge.ProbeStatus, len(names))
	}
	for i, name := range names {
		seq := 0
		if j := strings.LastIndexByte(name, '-'); j >= 0 {
			seq, _ = strconv.Atoi(name[j+1:])
		}
		phase := time.Duration((now.Unix()+int64(seq)*7)%120) * time.Second
		st.Peers[i] = bridge.PeerStatus{Name: name, Endpoint: fmt.Sprintf("198.51.100.%d:%d", 1+seq%250, 40000+seq/250),
			LastHandshake: now.Add(-phase).Truncate(time.Second), RxBytes: 1 << 20, TxBytes: 1 << 20}
		if st.Probes != nil {
			st.Probes[i] = bridge.ProbeStatus{Agent: name, OK: true, LatencyMS: 1.2, CheckedAt: now}
		}
	}
	n.built = st
	return st
}

func (n *simNode) synced(int64) {
	n.mu.Lock()
	first := n.syncedAt.IsZero()
	n.syncedAt = time.Now()
	n.mu.Unlock()
	if first {
		close(n.firstSync)
	}
}

type scaleResult struct {
	agents, gateways int
	enrol            time.Duration   // all nodes registered and holding a full slice
	propagation      []time.Duration // per gateway per round, sorted
	settle           time.Duration   // restart to the last node's resync
	settleFromReady  time.Duration   // Control ready to the last node's resync
	stop             time.Duration   // SIGTERM to Control's exit
	rssKiB           int             // Control, after the restart settled
	rssBeforeKiB     int             // Control, before the restart
	cpuEnrol         float64         // Control CPU seconds while the fleet enrolled
	cpuSettle        float64         // Control CPU seconds from restart to settled
	idleCPU          float64         // Control CPU seconds per second with the fleet idle
	dbMiB            float64         // the store's database file after the idle window
	dbGrowth         float64         // its growth in MiB/s over that window
	idleWrites       float64         // store revisions per second over that window: its writes
}

// fileMiB is the size of a file in MiB, 0 if it cannot be read.
func fileMiB(path string) float64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return float64(st.Size()) / (1 << 20)
}

func (r scaleResult) String() string {
	q := func(p int) time.Duration { return r.propagation[min(len(r.propagation)-1, len(r.propagation)*p/100)] }
	return fmt.Sprintf("%d agents, %d gateways: enrolled in %v (control CPU %.1fs); tunnel from its apply request to every gateway p50 %v p99 %v max %v (%d samples); "+
		"idle control CPU %.0f%% of a core, %.0f store writes/s, store database %.0f MiB growing %.2f MiB/s; Control stopped in %v, restart settled in %v (%v after ready, control CPU %.1fs); control RSS %d MiB before restart, %d MiB after",
		r.agents, r.gateways, r.enrol.Round(time.Millisecond), r.cpuEnrol, q(50), q(99), r.propagation[len(r.propagation)-1],
		len(r.propagation), 100*r.idleCPU, r.idleWrites, r.dbMiB, r.dbGrowth, r.stop.Round(time.Millisecond), r.settle.Round(time.Millisecond), r.settleFromReady.Round(time.Millisecond), r.cpuSettle,
		r.rssBeforeKiB/1024, r.rssKiB/1024)
}

// runControlScale runs the whole scenario and fails tb on any node left
// without its slice.
func runControlScale(tb testing.TB, agents, gateways, rounds int) scaleResult {
	// Each process holds a connection per node: the nodes' ends here,
	// Control's in its own process, which inherits the limit.
	raiseFileLimit(tb, agents+gateways+1000)
	// The simulated fleet is most of this process's memory, and with the
	// collector's default pacing the heap grows to twice what the fleet
	// holds. Past half the machine's memory the collector works harder
	// instead, and leaves the rest to Control.
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err == nil {
		old := debug.SetMemoryLimit(int64(si.Totalram) * int64(si.Unit) / 2)
		tb.Cleanup(func() { debug.SetMemoryLimit(old) })
	}
	// A benchmark runs for minutes: say where it is.
	progress := func(format string, args ...any) {
		if _, ok := tb.(*testing.B); ok {
			fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
		}
	}
	res := scaleResult{agents: agents, gateways: gateways}
	c := newControl(tb)
	// Kept whether the run passes or fails: a failure is when it is
	// wanted. Cleanups run last first, so this runs before Control's
	// directory goes.
	if path := os.Getenv("KAKUREMICHI_SCALE_CONTROL_LOG"); path != "" {
		tb.Cleanup(func() {
			if err := os.WriteFile(path, []byte(c.logs()), 0o644); err != nil {
				tb.Errorf("keep Control's log: %v", err)
			}
		})
	}
	token := c.adminToken()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	tb.Cleanup(func() { cancel(); wg.Wait() })

	apiKey := func(name, role string) string {
		code, out, err := request(ctx, "POST", c.url()+prefix+"/apikeys", token,
			fmt.Sprintf(`{"apiVersion":"kakuremichi.io/v1alpha1","kind":"APIKey","metadata":{"name":%q},"spec":{"role":%q}}`, name, role))
		if err != nil || code != 201 {
			tb.Fatalf("create apikey: %d %v %s", code, err, out)
		}
		var k struct {
			Status struct{ Secret string }
		}
		decodeJSON(tb, out, &k)
		return k.Status.Secret
	}
	keys := map[string]string{"Agent": apiKey("scale-agents", "agent"), "Gateway": apiKey("scale-gateways", "gateway")}

	// State directories on tmpfs when there is one: the slice files are
	// the nodes' business, not what this measures.
	base := os.TempDir()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		base = "/dev/shm"
	}
	stateRoot, err := os.MkdirTemp(base, "kakuremichi-scale-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(stateRoot) })

	var watchMu sync.Mutex
	var watchedKeys []string
	watched := func() []string {
		watchMu.Lock()
		defer watchMu.Unlock()
		return watchedKeys
	}

	var nodes []*simNode
	for i := 0; i < gateways; i++ {
		nodes = append(nodes, &simNode{kind: "Gateway", name: fmt.Sprintf("gw-%05d", i)})
	}
	for i := 0; i < agents; i++ {
		nodes = append(nodes, &simNode{kind: "Agent", name: fmt.Sprintf("agent-%05d", i)})
	}
	cpu0 := cpuSeconds([]int{c.pid()})
	start := time.Now()
	// Enrol at most this many at once: a fleet is not installed in one
	// instant, and registration is not what is measured.
	sem := make(chan struct{}, 200)
	startNode := func(i int, n *simNode) {
		n.firstSync = make(chan struct{})
		n.seen = map[string]time.Time{}
		key, err := wgnet.GeneratePrivateKey()
		if err != nil {
			tb.Fatal(err)
		}
		dir := fmt.Sprintf("%s/%s", stateRoot, n.name)
		if err := os.Mkdir(dir, 0o700); err != nil {
			tb.Fatal(err)
		}
		cfg := nodeclient.Config{ControlURL: c.url(), APIKey: keys[n.kind], Kind: n.kind, Name: n.name,
			PublicKey: key.PublicKey(), StateDir: dir, Version: "scale",
			Changes: func(m bridge.Message) error { return n.apply(m, watched) },
			Status:  n.status,
			Synced:  n.synced, MaxBackoff: 10 * time.Second,
			// The slice files are the nodes' business, not what this
			// measures: written once at enrolment, then not again while
			// the run lasts. Each node writes its own on its own machine;
			// here a delta after a quiet spell had a thousand gateways
			// write 2 MB each at once, and the first tunnel's route
			// reached the last of them seconds late.
			SaveInterval: time.Hour}
		if n.kind == "Gateway" {
			cfg.PublicEndpoint = fmt.Sprintf("192.0.2.%d:%d", 1+i%250, 51820+i/250)
		}
		n.client, err = nodeclient.New(cfg)
		if err != nil {
			tb.Fatal(err)
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			go func() {
				select {
				case <-n.firstSync:
				case <-ctx.Done():
				}
				<-sem
			}()
			if err := n.client.Run(ctx); err != nil {
				tb.Errorf("%s %s: %v", n.kind, n.name, err)
			}
		}()
	}
	// Agents first, then gateways: every gateway then gets its agents in
	// one snapshot instead of a delta per agent, which in one process
	// holding a thousand gateways would be the test's own bottleneck.
	for i, n := range nodes[gateways:] {
		startNode(gateways+i, n)
	}
	for deadline := time.Now().Add(time.Duration(120+agents/20) * time.Second); ; {
		addressed := 0
		for _, n := range nodes[gateways:] {
			if _, ok, _ := n.counts(); ok {
				addressed++
			}
		}
		if addressed == agents {
			break
		}
		progress("agents: %d of %d hold their address", addressed, agents)
		if time.Now().After(deadline) {
			tb.Fatalf("agents: %d of %d got their address\n%s", addressed, agents, tail(c.logs(), 3000))
		}
		time.Sleep(2 * time.Second)
	}
	for i, n := range nodes[:gateways] {
		startNode(i, n)
	}
	// Every node holds its whole slice: its address, and every node of
	// the other kind as a peer.
	complete := func() (int, *simNode) {
		missing := 0
		var first *simNode
		for _, n := range nodes {
			want := agents
			if n.kind == "Agent" {
				want = gateways
			}
			peers, addressed, _ := n.counts()
			if !addressed || peers != want {
				missing++
				if first == nil {
					first = n
				}
			}
		}
		return missing, first
	}
	waitComplete := func(what string, timeout time.Duration) {
		deadline := time.Now().Add(timeout)
		for {
			missing, first := complete()
			if missing == 0 {
				return
			}
			progress("%s: %d of %d nodes lack their whole slice", what, missing, len(nodes))
			if time.Now().After(deadline) {
				// Not under first.mu: the fleet stops, and applies, after.
				peers, addressed, _ := first.counts()
				tb.Fatalf("%s: %d nodes still lack their whole slice after %v; e.g. %s %s has %d peers, address %v%s\n%s",
					what, missing, timeout, first.kind, first.name, peers, addressed, dumpControl(c), tail(c.logs(), 3000))
			}
			time.Sleep(2 * time.Second)
		}
	}
	waitComplete("enrolment", time.Duration(120+(agents+gateways)/20)*time.Second)
	res.enrol = time.Since(start)
	res.cpuEnrol = cpuSeconds([]int{c.pid()}) - cpu0
	progress("enrolled in %v", res.enrol)

	// Idle: the fleet only sends heartbeats, which renew leases every
	// 8-10 s (and, with full statuses, rewrite an agent's once a minute
	// for its handshake times), so a shorter window measures where it
	// falls in that cycle as much as Control. The database file grows in
	// steps of 16 MiB; the store's revision counts its writes.
	idle := time.Duration(envInt("KAKUREMICHI_SCALE_IDLE", 60)) * time.Second
	if _, ok := tb.(*testing.B); !ok {
		idle = 2 * time.Second
	}
	revision := func() int64 {
		code, out, err := request(ctx, "GET", c.url()+prefix+"/tunnels", token, "")
		var list api.List
		if err != nil || code != 200 || json.Unmarshal(out, &list) != nil {
			tb.Fatalf("list tunnels for the store's revision: %d %v %s", code, err, out)
		}
		rev, err := strconv.ParseInt(list.Metadata.ResourceVersion, 10, 64)
		if err != nil {
			tb.Fatalf("list tunnels: resourceVersion %q: %v", list.Metadata.ResourceVersion, err)
		}
		return rev
	}
	cpuIdle := cpuSeconds([]int{c.pid()})
	dbFile := c.dataDir + "/etcd/member/snap/db"
	db0, rev0 := fileMiB(dbFile), revision()
	for end := time.Now().Add(idle); time.Now().Before(end); {
		time.Sleep(min(30*time.Second, time.Until(end)))
		progress("idle: the store's database is %.0f MiB", fileMiB(dbFile))
	}
	res.idleCPU = (cpuSeconds([]int{c.pid()}) - cpuIdle) / idle.Seconds()
	res.dbMiB = fileMiB(dbFile)
	res.dbGrowth = (res.dbMiB - db0) / idle.Seconds()
	res.idleWrites = float64(revision()-rev0) / idle.Seconds()
	progress("idle: control uses %.0f%% of a core; %.0f store writes/s; the store's database grew %.2f MiB/s to %.0f MiB", 100*res.idleCPU, res.idleWrites, res.dbGrowth, res.dbMiB)

	// Propagation: each round applies a tunnel and times, at every
	// gateway, the delta that carries its route.
	for r := 0; r < rounds; r++ {
		// Rounds are apart, as independent changes are: a burst reaches
		// a node as one delta per interval.
		time.Sleep(time.Second)
		host := fmt.Sprintf("scale-%d.example.com", r)
		key := "route/" + host
		watchMu.Lock()
		watchedKeys = append(slices.Clone(watchedKeys), key)
		watchMu.Unlock()
		body := fmt.Sprintf(`{"apiVersion":"kakuremichi.io/v1alpha1","kind":"Tunnel","metadata":{"name":"scale-%d"},"spec":{"hostname":%q,"agent":"agent-%05d","target":"http://127.0.0.1:8080"}}`, r, host, r%agents)
		// Timed from the request's start: a gateway may get the route
		// before this process has read the acknowledgement.
		sent := time.Now()
		code, out, err := request(ctx, "POST", c.url()+prefix+"/tunnels", token, body)
		if err != nil || code != 201 {
			tb.Fatalf("create tunnel: %d %v %s", code, err, out)
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			var lat []time.Duration
			for _, n := range nodes[:gateways] {
				n.mu.Lock()
				if at, ok := n.seen[key]; ok {
					lat = append(lat, at.Sub(sent))
				}
				n.mu.Unlock()
			}
			if len(lat) == gateways {
				res.propagation = append(res.propagation, lat...)
				slices.Sort(lat)
				progress("round %d: the route reached every gateway, p50 %v, last %v", r+1, lat[len(lat)/2], lat[len(lat)-1])
				break
			}
			if time.Now().After(deadline) {
				tb.Fatalf("round %d: %d of %d gateways got the route within 60s", r, len(lat), gateways)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	slices.Sort(res.propagation)
	res.rssBeforeKiB = rssKiB(c.pid())
	progress("propagation done")

	// Restart: every node must reconnect and be told its slice again (an
	// UpToDate when nothing changed), none left behind.
	stopping := time.Now()
	c.stop()
	restarted := time.Now()
	res.stop = restarted.Sub(stopping)
	c.start()
	ready := time.Now()
	cpu1 := cpuSeconds([]int{c.pid()})
	deadline := restarted.Add(time.Duration(120+(agents+gateways)/100) * time.Second)
	for {
		behind := 0
		var last time.Time
		var example *simNode
		for _, n := range nodes {
			n.mu.Lock()
			at := n.syncedAt
			n.mu.Unlock()
			if at.Before(restarted) || !n.client.Connected() {
				behind++
				example = n
			} else if at.After(last) {
				last = at
			}
		}
		progress("restart: %d nodes behind", behind)
		if behind == 0 {
			res.settle, res.settleFromReady = last.Sub(restarted), last.Sub(ready)
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("after the restart %d nodes have not resynced (e.g. %s %s)%s\n%s",
				behind, example.kind, example.name, dumpControl(c), tail(c.logs(), 3000))
		}
		time.Sleep(time.Second)
	}
	res.cpuSettle = cpuSeconds([]int{c.pid()}) - cpu1
	waitComplete("after the restart", 30*time.Second)
	for _, n := range nodes[:gateways] {
		if _, _, got := n.counts(); got != rounds {
			tb.Fatalf("gateway %s serves %d routes after the restart, want %d", n.name, got, rounds)
		}
	}
	res.rssKiB = rssKiB(c.pid())
	return res
}

// dumpControl has Control write its goroutines into its log and exit
// (SIGQUIT), for a run that found it stuck: what it waits on is there. It
// returns what a failure message says of it.
func dumpControl(c *controlProc) string {
	syscall.Kill(c.pid(), syscall.SIGQUIT)
	time.Sleep(3 * time.Second)
	return "; Control's goroutines are dumped in its log (kept with KAKUREMICHI_SCALE_CONTROL_LOG)"
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
