// Package flagenv gives every command-line flag an environment variable:
// --data-dir is also KAKUREMICHI_DATA_DIR. A flag given on the command line
// wins over the environment. It imports only the standard library.
package flagenv

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

// EnvName returns the environment variable for a flag name.
func EnvName(prefix, flagName string) string {
	return prefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Parse parses args into fs after applying the environment: for each flag
// in fs, the variable prefix+NAME (if set) is its value unless the flag is
// on the command line.
func Parse(fs *flag.FlagSet, prefix string, args []string) error {
	var errs []string
	fs.VisitAll(func(f *flag.Flag) {
		if v, ok := os.LookupEnv(EnvName(prefix, f.Name)); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Sprintf("%s=%q: %v", EnvName(prefix, f.Name), v, err))
			}
		}
	})
	if len(errs) > 0 {
		return fmt.Errorf("environment: %s", strings.Join(errs, "; "))
	}
	return fs.Parse(args)
}

// Usage returns a usage function that lists each flag with its variable.
func Usage(fs *flag.FlagSet, prefix, synopsis string) func() {
	return func() {
		out := fs.Output()
		fmt.Fprintf(out, "%s\n\nFlags (each also read from the environment variable shown):\n", synopsis)
		fs.VisitAll(func(f *flag.Flag) {
			name, usage := flag.UnquoteUsage(f)
			fmt.Fprintf(out, "  --%s %s\t[%s]\n    \t%s", f.Name, name, EnvName(prefix, f.Name), usage)
			if f.DefValue != "" {
				fmt.Fprintf(out, " (default %q)", f.DefValue)
			}
			fmt.Fprintln(out)
		})
	}
}
