// Package buildinfo reports the version and commit a binary was built
// from, for /version, node status and `version` commands. It imports only
// the standard library.
package buildinfo

import "runtime/debug"

// version is set at link time: -ldflags "-X .../buildinfo.version=v0.1.0".
var version = ""

// Version returns the release version, or "dev" for a development build.
func Version() string {
	if version != "" {
		return version
	}
	return "dev"
}

// Commit returns the VCS revision the binary was built from, if known,
// with "-dirty" when the tree had local changes.
func Commit() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev == "" {
		return ""
	}
	return rev + dirty
}
