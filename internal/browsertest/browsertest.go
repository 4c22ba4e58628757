// Package browsertest drives a real chromium for tests of the web UI:
// Debian's chromium (installed by .ci/run) or Chrome, one browser per
// test, screenshots written where $KAKUREMICHI_ARTIFACTS says. It imports
// chromedp and the standard library only.
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Browser is a running chromium and the test that drives it.
type Browser struct {
	t     *testing.T
	ctx   context.Context
	shots string
}

// Start starts chromium for t (skipping t when there is none), with a
// 1200×800 window, stopped when t ends or after timeout. Screenshots go to
// $KAKUREMICHI_ARTIFACTS/<dir>, or to a temporary directory.
func Start(t *testing.T, dir string, timeout time.Duration) *Browser {
	t.Helper()
	exe := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			exe = p
			break
		}
	}
	if exe == "" {
		t.Skip("no chromium binary found; .ci/run installs one")
	}
	shots := t.TempDir()
	if root := os.Getenv("KAKUREMICHI_ARTIFACTS"); root != "" {
		shots = filepath.Join(root, dir)
		if err := os.MkdirAll(shots, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.NoSandbox,
		chromedp.WindowSize(1200, 800), chromedp.Flag("disable-gpu", true))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	ctx, cancelTimeout := context.WithTimeout(ctx, timeout)
	t.Cleanup(func() { cancelTimeout(); cancel(); cancelAlloc() })
	return &Browser{t: t, ctx: ctx, shots: shots}
}

// Dir is where the screenshots go.
func (b *Browser) Dir() string { return b.shots }

// Context is the browser's context, for chromedp calls of the test's own.
func (b *Browser) Context() context.Context { return b.ctx }

// Shot is an action that saves a full-page screenshot as name.png.
func (b *Browser) Shot(name string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		buf, err := chromedp.FullScreenshot(100)(ctx, tg)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(b.shots, name+".png"), buf, 0o644)
	})
}

// Run runs actions, failing the test with step named if one fails.
func (b *Browser) Run(step string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v", step, err)
	}
}
