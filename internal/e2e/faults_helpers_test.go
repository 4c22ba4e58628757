package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

// The fault tests run one shape of fleet: three gateways, two agents, an
// app behind each agent and a tunnel to each app.

// faultTunnel is a tunnel of the fault tests' fleet and what its page says.
type faultTunnel struct {
	name, host, agent, app string
}

// want is the text the tunnel's page contains.
func (ft faultTunnel) want() string { return "Hello from " + ft.app }

var faultTunnels = []faultTunnel{
	{name: "web", host: "fuga.sample.com", agent: "home", app: "app-a"},
	{name: "api", host: "api.company.com", agent: "office", app: "app-b"},
}

// newFaultCluster starts Control, gateways gw1..gw3, agents home and office,
// their apps and faultTunnels, and returns once every gateway serves every
// tunnel.
func newFaultCluster(t *testing.T) *cluster {
	t.Helper()
	c := newCluster(t)
	for _, g := range []string{"gw1", "gw2", "gw3"} {
		c.addGateway(g)
	}
	for _, ft := range faultTunnels {
		c.addApp(ft.app)
		c.addAgent(ft.agent)
	}
	c.waitNodesReady(60 * time.Second)
	for _, ft := range faultTunnels {
		c.applyTunnel(ft.name, ft.host, ft.agent, c.apps[ft.app])
	}
	for _, g := range c.gateways {
		for _, ft := range faultTunnels {
			waitServing(t, gatewayClient(g.httpAddr, 2*time.Second), "http://"+ft.host+"/", 200, ft.want(), 10*time.Second)
		}
	}
	return c
}

// faultTarget is one URL a load sends requests to, through one gateway.
type faultTarget struct {
	gateway string // the gateway's name, for reports
	addr    string // the gateway listener the request is sent to
	url     string
	want    string // text the body must contain
}

// faultTargets lists every tunnel through each of the given gateways, over
// HTTP and HTTPS.
func faultTargets(gws []*gatewayProc) []faultTarget {
	var out []faultTarget
	for _, g := range gws {
		for _, ft := range faultTunnels {
			out = append(out,
				faultTarget{gateway: g.name, addr: g.httpAddr, url: "http://" + ft.host + "/", want: ft.want()},
				faultTarget{gateway: g.name, addr: g.httpsAddr, url: "https://" + ft.host + "/", want: ft.want()})
		}
	}
	return out
}

// faultClient dials addr for any URL, like gatewayClient; with keepAlive
// false every request opens a new connection, so the load covers new
// connections as well as established ones.
func faultClient(addr string, keepAlive bool) *http.Client {
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: dial,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true,
		DisableKeepAlives: !keepAlive, MaxIdleConnsPerHost: 4}}
}

// faultSample is one request of a load.
type faultSample struct {
	start   time.Time
	latency time.Duration
	target  string // gateway and URL
	err     string // empty when the right page came back
}

// faultEvent is something done during a load, after the given time.
type faultEvent struct {
	after time.Duration
	do    func()
}

// faultLoad sends requests from workers goroutines for d, each worker
// going round the targets from its own starting point; even workers keep
// their connections, odd ones open a new one per request. The events run
// in the calling goroutine at their times. It returns every request, when
// the load started and when each event ran.
func faultLoad(targets []faultTarget, workers int, d time.Duration, events ...faultEvent) ([]faultSample, time.Time, []time.Time) {
	start := time.Now()
	end := start.Add(d)
	var (
		mu      sync.Mutex // guards samples
		samples []faultSample
		wg      sync.WaitGroup
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			clients := map[string]*http.Client{}
			defer func() {
				for _, cl := range clients {
					cl.CloseIdleConnections()
				}
			}()
			var mine []faultSample
			for i := w; time.Now().Before(end); i++ {
				tg := targets[i%len(targets)]
				cl := clients[tg.addr]
				if cl == nil {
					cl = faultClient(tg.addr, w%2 == 0)
					clients[tg.addr] = cl
				}
				s := faultSample{start: time.Now(), target: tg.gateway + " " + tg.url}
				code, body, err := get(cl, tg.url)
				s.latency = time.Since(s.start)
				switch {
				case err != nil:
					s.err = err.Error()
				case code != http.StatusOK:
					s.err = fmt.Sprintf("status %d: %.100s", code, body)
				case !strings.Contains(body, tg.want):
					s.err = fmt.Sprintf("body without %q: %.100s", tg.want, body)
				}
				mine = append(mine, s)
			}
			mu.Lock()
			samples = append(samples, mine...)
			mu.Unlock()
		}()
	}
	ran := make([]time.Time, len(events))
	for i, ev := range events {
		// A deadline, not a wait for a condition: the event is meant to
		// land at this point of the load.
		time.Sleep(time.Until(start.Add(ev.after)))
		ev.do()
		ran[i] = time.Now()
	}
	wg.Wait()
	return samples, start, ran
}

// faultStats sums up a load.
type faultStats struct {
	requests, failures int
	p50, p99           time.Duration
	examples           []string // the first few failures
}

// faultSummarize sums up the samples that started in [from, to).
func faultSummarize(samples []faultSample, from, to time.Time) faultStats {
	var st faultStats
	var lat []time.Duration
	for _, s := range samples {
		if s.start.Before(from) || !s.start.Before(to) {
			continue
		}
		st.requests++
		lat = append(lat, s.latency)
		if s.err != "" {
			st.failures++
			if len(st.examples) < 5 {
				st.examples = append(st.examples, fmt.Sprintf("%s at +%v: %s", s.target, s.start.Sub(from).Round(time.Millisecond), s.err))
			}
		}
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		st.p50 = lat[len(lat)*50/100]
		st.p99 = lat[min(len(lat)-1, len(lat)*99/100)]
	}
	return st
}

func (st faultStats) String() string {
	return fmt.Sprintf("%d requests, %d failed, p50 %v, p99 %v", st.requests, st.failures,
		st.p50.Round(10*time.Microsecond), st.p99.Round(10*time.Microsecond))
}

// faultPoll calls cond until it holds and returns how long that took; if
// it does not hold within the given time the test fails with cond's last
// description of what it saw.
func faultPoll(t *testing.T, within time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		ok, seen := cond()
		if ok {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("%s: got %s after %v, want it within %v", what, seen, time.Since(start).Round(time.Millisecond), within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// faultFleet is the nodes as Control's API shows them.
type faultFleet struct {
	gateways map[string]*api.Gateway
	agents   map[string]*api.Agent
	tunnels  map[string]*api.Tunnel
}

// faultReadFleet reads every gateway, agent and tunnel. Unlike cluster.api it does
// not end the test when Control does not answer: callers poll with it.
func faultReadFleet(c *cluster) (faultFleet, error) {
	f := faultFleet{gateways: map[string]*api.Gateway{}, agents: map[string]*api.Agent{}, tunnels: map[string]*api.Tunnel{}}
	for _, kind := range []string{"gateways", "agents", "tunnels"} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		code, out, err := request(ctx, "GET", c.control.url()+prefix+"/"+kind, c.token, "")
		cancel()
		if err != nil {
			return f, fmt.Errorf("list %s: %w", kind, err)
		}
		if code != http.StatusOK {
			return f, fmt.Errorf("list %s: status %d: %.200s", kind, code, out)
		}
		var list api.List
		if err := jsonUnmarshal(out, &list); err != nil {
			return f, fmt.Errorf("list %s: %w", kind, err)
		}
		for _, raw := range list.Items {
			obj, err := api.DecodeObject(raw)
			if err != nil {
				return f, fmt.Errorf("list %s: %w", kind, err)
			}
			switch o := obj.(type) {
			case *api.Gateway:
				f.gateways[o.Metadata.Name] = o
			case *api.Agent:
				f.agents[o.Metadata.Name] = o
			case *api.Tunnel:
				f.tunnels[o.Metadata.Name] = o
			}
		}
	}
	return f, nil
}

// faultCondition returns the status of a condition type, "" when absent.
func faultCondition(conds []api.Condition, typ string) api.ConditionStatus {
	if c := api.FindCondition(conds, typ); c != nil {
		return c.Status
	}
	return ""
}

// faultProbe returns what a gateway reports of its probe of an agent.
func faultProbe(g *api.Gateway, agent string) string {
	for _, p := range g.Status.Agents {
		if p.Name == agent {
			return p.Probe
		}
	}
	return ""
}

// faultStateDir returns the --state-dir a node process was started with.
func faultStateDir(t *testing.T, p *controlProc) string {
	t.Helper()
	i := slices.Index(p.args, "--state-dir")
	if i < 0 || i+1 >= len(p.args) {
		t.Fatalf("%v has no --state-dir", p.args)
	}
	return p.args[i+1]
}

// faultFDCount counts a process's open file descriptors.
func faultFDCount(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join("/proc", fmt.Sprint(pid), "fd"))
	if err != nil {
		t.Fatalf("count fds of %d: %v", pid, err)
	}
	return len(ents)
}

// faultServesAll reports whether every tunnel answers its page through every
// given gateway, and what failed first otherwise.
func faultServesAll(gws []*gatewayProc, tunnels []faultTunnel) (bool, string) {
	for _, g := range gws {
		cl := gatewayClient(g.httpAddr, 2*time.Second)
		for _, ft := range tunnels {
			code, body, err := get(cl, "http://"+ft.host+"/")
			if err != nil || code != 200 || !strings.Contains(body, ft.want()) {
				cl.CloseIdleConnections()
				return false, fmt.Sprintf("%s via %s: %d %v %.100s", ft.host, g.name, code, err, body)
			}
		}
		cl.CloseIdleConnections()
	}
	return true, "every tunnel served"
}
