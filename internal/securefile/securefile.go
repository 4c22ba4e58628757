// Package securefile writes secrets and state to disk the one safe way:
// mode 0600 in a 0700 directory, through a temporary file that is synced
// and renamed, so a reader never sees half a key and a crash never leaves
// one. It imports only the standard library.
package securefile

import (
	"os"
	"path/filepath"
)

// Write replaces path with data, mode 0600, creating its directory (0700)
// if needed.
func Write(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
