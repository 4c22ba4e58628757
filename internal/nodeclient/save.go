package nodeclient

import (
	"path/filepath"
	"time"

	"github.com/kakuremichi/kakuremichi/internal/securefile"
)

// saveInterval is the least time between two writes of the slice file,
// unless Config.SaveInterval says otherwise.
// The file is what a node serves when it restarts with Control away; a
// gateway of a large fleet holds megabytes of peers and, while the fleet
// enrols, gets a delta every quarter of a second. Writing (and syncing)
// the whole file for each delta cost more than the delta; now a burst of
// deltas is written once, at most saveInterval after the first.
const saveInterval = time.Second

// saveSoon has the slice file written: at once after a quiet spell, or,
// when it was written less than the save interval ago, once that interval
// is up, with the slice of then. The write runs on a goroutine of its own,
// never the caller's: a gateway's file is megabytes, and a slow disk would
// otherwise hold up the next message from Control, the heartbeat that
// acknowledges an ACME challenge and the answers to Control's pings.
func (c *Client) saveSoon() {
	c.saveMu.Lock()
	defer c.saveMu.Unlock()
	if c.saveTimer != nil {
		return // a write is due; it takes the newest slice
	}
	wait := max(0, c.cfg.SaveInterval-time.Since(c.lastSave))
	c.saveTimer = time.AfterFunc(wait, func() {
		c.saveMu.Lock()
		defer c.saveMu.Unlock()
		if c.saveTimer != nil {
			c.saveTimer = nil
			c.saveLocked()
		}
	})
}

// flushSave writes the slice file now if a write is due.
func (c *Client) flushSave() {
	c.saveMu.Lock()
	defer c.saveMu.Unlock()
	if c.saveTimer != nil {
		c.saveTimer.Stop()
		c.saveTimer = nil
		c.saveLocked()
	}
}

// saveLocked writes the slice the client holds. c.saveMu is held.
func (c *Client) saveLocked() {
	c.lastSave = time.Now()
	c.encMu.Lock()
	c.mu.Lock()
	enc, rev := c.enc, c.revision
	c.mu.Unlock()
	var data []byte
	if enc != nil {
		data = enc.saved(rev)
	}
	c.encMu.Unlock()
	if data == nil {
		return
	}
	if err := securefile.Write(filepath.Join(c.cfg.StateDir, sliceFile), data); err != nil {
		c.log.Error("save slice", "err", err)
	}
}
