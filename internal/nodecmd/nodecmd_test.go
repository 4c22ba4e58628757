package nodecmd

import (
	"bytes"
	"flag"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// TestDebugListenServesProfiles: --debug-listen serves the process's Go
// profiles where the log says; an address that cannot be listened on is
// refused, naming the flag.
func TestDebugListenServesProfiles(t *testing.T) {
	var lf LogFlags
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	lf.Register(fs)
	var stderr bytes.Buffer
	if _, code := ParseCommand(fs, []string{"--debug-listen", "127.0.0.1:0"}, &lf, &stderr); code != -1 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	m := regexp.MustCompile(`url=(http://\S+/debug/pprof/)`).FindStringSubmatch(stderr.String())
	if m == nil {
		t.Fatalf("log %q: want the profiles' URL", stderr.String())
	}
	resp, err := http.Get(m[1] + "heap?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "heap profile") {
		t.Fatalf("GET heap: %d %.200s", resp.StatusCode, body)
	}

	lf = LogFlags{}
	fs = flag.NewFlagSet("x", flag.ContinueOnError)
	lf.Register(fs)
	stderr.Reset()
	if _, code := ParseCommand(fs, []string{"--debug-listen", "127.0.0.1:99999"}, &lf, &stderr); code != 2 || !strings.Contains(stderr.String(), "--debug-listen") {
		t.Fatalf("a bad address: exit %d, %q; want 2 naming --debug-listen", code, stderr.String())
	}
}
