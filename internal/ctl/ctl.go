// Package ctl is kakuremichictl, the command-line client of Control:
// login, apply, get, describe, diff, delete, create token and version.
// Everything but the process itself lives here, behind Run, so tests call
// the commands directly with their own arguments, input and output.
//
// It talks to Control only through package api/client, and may import
// package api, api/client, internal/buildinfo, sigs.k8s.io/yaml and the
// standard library.
package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/api/client"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// cli is one invocation: its streams and the flags every command shares.
type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	now            func() time.Time
	lookupEnv      func(string) (string, bool)
	global         globalFlags
	// clients made by this run, whose connections it closes at the end.
	clients []*client.Client
}

// globalFlags are accepted before the command and by every command.
type globalFlags struct {
	server, token, tokenFile, caFile, configPath string
	insecure                                     bool
}

// register adds the global flags to fs. They are set through funcs, so
// registering them again on a command's flag set keeps what was given
// before the command (and --help shows no token as a default).
func (g *globalFlags) register(fs *flag.FlagSet) {
	str := func(p *string) func(string) error {
		return func(v string) error { *p = v; return nil }
	}
	fs.Func("server", "Control's URL (env KAKUREMICHI_SERVER; default from the config file)", str(&g.server))
	fs.Func("token", "bearer token; prefer --token-file or KAKUREMICHI_TOKEN, which stay out of the process list", str(&g.token))
	fs.Func("token-file", "file holding the bearer token", str(&g.tokenFile))
	fs.Func("ca-file", "PEM file of the CA that signed Control's certificate (env KAKUREMICHI_CA_FILE)", str(&g.caFile))
	fs.BoolFunc("insecure-skip-tls-verify", "accept any certificate from Control (testing only)", func(v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return err
		}
		g.insecure = b
		return nil
	})
	fs.Func("config", "config file (env KAKUREMICHI_CONFIG; default $XDG_CONFIG_HOME/kakuremichi/config.yaml)", str(&g.configPath))
}

// command is one subcommand.
type command struct {
	name    string
	usage   string
	summary string
	run     func(ctx context.Context, c *cli, args []string) error
}

func commands() []command {
	return []command{
		{"login", "login --server URL [--token-file FILE | --token TOKEN | --username NAME [--ttl 720h]]   (token or password read from stdin otherwise)",
			"check a token against Control and save server and token in the config file", runLogin},
		{"apply", "apply -f FILE|DIR|- [-f ...] [--prune -l SELECTOR] [--dry-run] [-o name|yaml|json]",
			"create or update objects so they match the manifests", runApply},
		{"get", "get KIND[,KIND...]|all [NAME...] [-l SELECTOR] [-o wide|yaml|json|name] [-w]",
			"list objects, or show some by name; 'get ca -o pem' prints the internal CA's root to trust", runGet},
		{"describe", "describe KIND NAME [NAME...]", "show an object in detail, with its conditions", runDescribe},
		{"diff", "diff -f FILE|DIR|- [-f ...]",
			"show what apply would change (exit 0: no difference, 1: differences, 2: error)", runDiff},
		{"delete", "delete -f FILE|DIR|- [-f ...] | delete KIND NAME [NAME...]  [--ignore-not-found] [--dry-run]",
			"delete objects", runDelete},
		{"create", "create token NAME --role admin|editor|viewer [--expires 720h] [--description TEXT]\n" +
			"  kakuremichictl create apikey NAME --role agent|gateway [--expires 24h] [--max-uses N] [--description TEXT]",
			"create a token, or an API key that enrols nodes, and print its secret (only on stdout, only this once)", runCreate},
		{"invite", "invite --role admin|editor|viewer [--ttl 72h] | invite list | invite revoke ID",
			"make a single-use link to sign up in the web UI with a role (printed only this once), list or revoke invites (admins)", runInvite},
		{"registration", "registration [open|invite]",
			"show or set who may sign up in the web UI: anyone, as a viewer (open), or people with an invite (admins)", runRegistration},
		{"audit", "audit [--limit 50] [-o json]", "show the latest changes made through the API or the web UI: who, what, when, from where (admins)", runAudit},
		{"version", "version", "print the client's and the server's versions", runVersion},
	}
}

func findCommand(name string) (command, bool) {
	for _, cmd := range commands() {
		if cmd.name == name {
			return cmd, true
		}
	}
	return command{}, false
}

func usageText() string {
	var b strings.Builder
	b.WriteString("kakuremichictl: manage kakuremichi through Control's API.\n\nUsage:\n")
	for _, cmd := range commands() {
		fmt.Fprintf(&b, "  kakuremichictl %s\n      %s\n", cmd.usage, cmd.summary)
	}
	b.WriteString("\nGlobal flags (before or after the command): --server URL, --token TOKEN, --token-file FILE,\n" +
		"--ca-file FILE, --insecure-skip-tls-verify, --config FILE.\n" +
		"Connection settings come from flags, then KAKUREMICHI_SERVER / KAKUREMICHI_TOKEN, then the config file.\n" +
		"Kinds: " + strings.Join(api.KindNames(), ", ") + ".\n\n" +
		"Run \"kakuremichictl COMMAND --help\" for a command's flags.\n")
	return b.String()
}

// Run runs kakuremichictl with args (without the program name) and returns
// the exit code: 0 for success, 1 for errors (and for differences found by
// diff), 2 for usage errors. Connection settings come from the --server
// and --token flags, then the environment, then the config file.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	c := &cli{stdin: stdin, stdout: stdout, stderr: stderr, now: time.Now, lookupEnv: os.LookupEnv}
	return c.main(ctx, args)
}

// main runs one invocation and closes the connections it opened. Tests
// call it on a cli of their own to set its clock.
func (c *cli) main(ctx context.Context, args []string) int {
	defer func() {
		for _, cl := range c.clients {
			cl.CloseIdleConnections()
		}
	}()
	return c.run(ctx, args)
}

func (c *cli) run(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("kakuremichictl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.global.register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(c.stdout, usageText())
			return exitOK
		}
		fmt.Fprintf(c.stderr, "error: %v\n\n%s", err, usageText())
		return exitUsage
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fmt.Fprint(c.stderr, usageText())
		return exitUsage
	}
	if rest[0] == "help" {
		if len(rest) > 1 {
			if cmd, ok := findCommand(rest[1]); ok {
				fmt.Fprintf(c.stdout, "Usage: kakuremichictl %s\n\n%s\n", cmd.usage, cmd.summary)
				return exitOK
			}
		}
		fmt.Fprint(c.stdout, usageText())
		return exitOK
	}
	cmd, ok := findCommand(rest[0])
	if !ok {
		fmt.Fprintf(c.stderr, "error: unknown command %q\n\n%s", rest[0], usageText())
		return exitUsage
	}
	err := cmd.run(ctx, c, rest[1:])
	return c.exitCode(cmd, err)
}

// exitCode reports err as it deserves and returns the exit code.
func (c *cli) exitCode(cmd command, err error) int {
	var code *exitCodeError
	var usage *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &usage):
		fmt.Fprintf(c.stderr, "error: %s\nUsage: kakuremichictl %s\n", usage.msg, cmd.usage)
		return exitUsage
	case errors.As(err, &code):
		if code.err != nil {
			c.printError(code.err)
		}
		return code.code
	default:
		c.printError(err)
		return exitError
	}
}

// usageError is a command line that cannot be run as written.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitCodeError ends a command with a given exit code, reporting err if
// it is not nil.
type exitCodeError struct {
	code int
	err  error
}

func (e *exitCodeError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitCodeError) Unwrap() error { return e.err }

// errReported says that the command already printed its errors.
var errReported = errors.New("errors were reported")

// lineErrors are several problems found at once, one per line.
type lineErrors []string

func (l lineErrors) Error() string { return strings.Join(l, "\n") }

// printError writes err to stderr, each line prefixed "error: ", followed,
// for an API answer about invalid fields, by each field and its problem.
func (c *cli) printError(err error) {
	if errors.Is(err, errReported) {
		return
	}
	var lines lineErrors
	if errors.As(err, &lines) {
		for _, l := range lines {
			fmt.Fprintf(c.stderr, "error: %s\n", l)
		}
		return
	}
	fmt.Fprintf(c.stderr, "error: %s\n", err)
	var se *api.StatusError
	if errors.As(err, &se) && se.Status.Details != nil {
		for _, cause := range se.Status.Details.Causes {
			fmt.Fprintf(c.stderr, "  %s\n", cause.Error())
		}
	}
}

// newFlagSet returns a flag set for a command that also takes the global
// flags, writing its help to stdout.
func (c *cli) newFlagSet(cmd string) *flag.FlagSet {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(c.stdout)
	c.global.register(fs)
	cmdInfo, _ := findCommand(cmd)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: kakuremichictl %s\n\n%s\n\nFlags:\n", cmdInfo.usage, cmdInfo.summary)
		fs.PrintDefaults()
	}
	return fs
}

// parseArgs parses flags wherever they appear among the positional
// arguments ("get tunnels -o yaml" as well as "get -o yaml tunnels"), and
// returns the positional ones. After "--" everything is positional.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usagef("%v", err)
		}
		rest := fs.Args()
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// stringList is a flag that may be given several times.
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }

func (s *stringList) Set(v string) error {
	*s = append(*s, v)
	return nil
}

// ref names an object the way commands print it: "tunnel/web".
func ref(obj api.Object) string {
	kind := obj.GetTypeMeta().Kind
	if k, ok := api.LookupKind(kind); ok {
		kind = k.Singular
	}
	return strings.ToLower(kind) + "/" + obj.GetMeta().Name
}

// parseKind resolves a kind named on the command line.
func parseKind(name string) (api.KindInfo, error) {
	k, ok := api.LookupKind(name)
	if !ok {
		return api.KindInfo{}, fmt.Errorf("unknown kind %q (known: %s)", name, strings.Join(api.KindNames(), ", "))
	}
	return k, nil
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
