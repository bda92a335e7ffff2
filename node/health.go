package node

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bftmon/bftmon/abci"
)

// StallAfter is how long without a committed block makes a node say it is
// not committing (GET /v1/status answers 503): many times any healthy
// block interval, so a slow round is not a stall.
const StallAfter = 15 * time.Second

// MinFreeDisk is the free space the filesystem of a node's home must have
// for the node to start: below it, CometBFT's and the store's writes would
// soon fail and the node would stop committing.
const MinFreeDisk = 256 << 20

// diskFree reports the free and total bytes of the filesystem holding path
// (a variable for tests).
var diskFree = func(path string) (free, total uint64, err error) {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(path, &fs); err != nil {
		return 0, 0, err
	}
	return fs.Bavail * uint64(fs.Bsize), fs.Blocks * uint64(fs.Bsize), nil
}

// checkDisk refuses to start a node whose home has too little free space.
func checkDisk(home string) error {
	free, total, err := diskFree(home)
	if err != nil {
		return nil // not knowable here: let the node try
	}
	if free < MinFreeDisk {
		return fmt.Errorf("only %s of %s free on the filesystem of %s; a node needs at least %s free to start: free some space, or move the home to a larger disk",
			bytesText(free), bytesText(total), home, bytesText(MinFreeDisk))
	}
	return nil
}

// diskText describes the free space of home's data directory, for error
// messages about failed writes.
func diskText(home string) string {
	dir := filepath.Join(home, "data")
	free, total, err := diskFree(dir)
	if err != nil {
		return fmt.Sprintf("the disk of %s (free space unknown: %v)", dir, err)
	}
	return fmt.Sprintf("the disk of %s (%s of %s free)", dir, bytesText(free), bytesText(total))
}

func bytesText(b uint64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	}
	return fmt.Sprintf("%d KiB", b>>10)
}

// commitHealth follows the node's commits and CometBFT's consensus
// failure, so that every client sees when the node stopped committing.
type commitHealth struct {
	home string

	mu       sync.Mutex
	height   int64
	at       time.Time // local time of the last commit (or of the start)
	failed   error
	failedCh chan struct{}
}

func newCommitHealth(home string, height int64) *commitHealth {
	return &commitHealth{home: home, height: height, at: time.Now(), failedCh: make(chan struct{})}
}

// committed is the commit listener.
func (h *commitHealth) committed(b abci.Block) {
	h.mu.Lock()
	h.height, h.at = b.Height, time.Now()
	h.mu.Unlock()
}

// consensusFailed records CometBFT's report that consensus failed (it
// stops committing for good, and would otherwise keep serving old state).
func (h *commitHealth) consensusFailed(msg string, kv []any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failed != nil {
		return
	}
	cause := ""
	for i := 0; i+1 < len(kv); i += 2 {
		if k, _ := kv[i].(string); k == "err" {
			cause = fmt.Sprint(kv[i+1])
		}
	}
	if j := strings.Index(cause, "\n"); j > 0 {
		cause = cause[:j]
	}
	h.failed = fmt.Errorf("consensus failed after height %d (%s: %s); a full or failing disk is the usual cause: check %s, then restart the node",
		h.height, msg, cause, diskText(h.home))
	close(h.failedCh)
}

// state says whether the node commits, since which height it does not, and
// why (nil: it commits).
func (h *commitHealth) state() (height int64, since time.Time, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failed != nil {
		return h.height, h.at, h.failed
	}
	if time.Since(h.at) > StallAfter {
		return h.height, h.at, fmt.Errorf("not committing since height %d (%s ago): the network has no quorum, or this node cannot reach it",
			h.height, time.Since(h.at).Round(time.Second))
	}
	return h.height, h.at, nil
}
