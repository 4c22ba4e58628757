// Command kakuremichi-agent is the agent alone: `kakuremichi-agent` takes
// the flags and environment of `kakuremichi agent` and runs the same code,
// in a binary without Control and its embedded etcd, so that an agent
// beside a small app stays small (about half the memory).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/kakuremichi/kakuremichi/internal/buildinfo"
	"github.com/kakuremichi/kakuremichi/internal/nodecmd"
)

const usage = `kakuremichi-agent: the kakuremichi agent alone, for small machines.

Usage:
  kakuremichi-agent [flags]             run an agent (the flags of "kakuremichi agent")
  kakuremichi-agent healthcheck URL     exit 0 if URL answers 2xx (for container HEALTHCHECKs)
  kakuremichi-agent version             print the version

Run "kakuremichi-agent --help" for the flags.`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "agent": // as in "kakuremichi agent", so commands can be swapped
			args = args[1:]
		case "healthcheck":
			return nodecmd.RunHealthcheck(ctx, args[1:], stderr)
		case "version", "--version":
			fmt.Fprintf(stdout, "kakuremichi-agent %s %s\n", buildinfo.Version(), buildinfo.Commit())
			return 0
		case "help":
			fmt.Fprintln(stdout, usage)
			return 0
		}
	}
	return nodecmd.RunAgent(ctx, args, stderr)
}
