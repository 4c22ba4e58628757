// Command kakuremichictl is the command-line client of kakuremichi's
// Control: apply manifests, list and describe objects, diff, delete and
// create tokens. The commands live in internal/ctl; this is only the
// process around them.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/kakuremichi/kakuremichi/internal/ctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := ctl.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
