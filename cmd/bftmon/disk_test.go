package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/internal/testutil"
	"github.com/bftmon/bftmon/node"
)

// diskSize is the tmpfs the full-disk test puts a home on: the free space
// a node needs to start (node.MinFreeDisk) and 64 MiB for it to write.
const diskSize = node.MinFreeDisk + 64<<20

// nodeProc is one run of `bftmon start`, as a supervisor runs it.
type nodeProc struct {
	cmd    *exec.Cmd
	stderr testutil.SyncBuffer
	done   chan struct{}
	err    error // cmd.Wait's, once done is closed
}

func startNodeProc(t *testing.T, bin, home string) *nodeProc {
	t.Helper()
	p := &nodeProc{cmd: exec.Command(bin, "start", "--home", home), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = &p.stderr, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// exitCode waits up to timeout for the process to exit and returns its
// exit code.
func (p *nodeProc) exitCode(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("bftmon start still running after %s; output:\n%s", timeout, p.stderr.String())
	}
	var ee *exec.ExitError
	if p.err == nil {
		return 0
	}
	if !errors.As(p.err, &ee) {
		t.Fatalf("bftmon start: %v", p.err)
	}
	return ee.ExitCode()
}

// fillDisk writes zeros to path until its filesystem is full.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zeros := make([]byte, 1<<20)
	for {
		if _, err := f.Write(zeros); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			t.Fatalf("fill %s: %v", path, err)
		}
	}
}

// TestFullDiskExitsAndRestartResumes is what README's GET /v1/status row
// and docs/GUARANTEES.md (X1) promise about a full disk, on the real
// binary with its home on a small tmpfs: when the disk fills, bftmon start
// exits 1 promptly, saying that consensus failed, that there is no space
// left, and which disk to check; its API is gone (connection refused); a
// supervisor's restart while the disk is still full exits 1 again, saying
// how much space it needs; once space is freed, the next restart commits
// past the old height with the state written before intact (a key/value
// entry, the app hash of a height before) and commits new writes.
func TestFullDiskExitsAndRestartResumes(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: fills a tmpfs under a real node")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs (mount -t tmpfs)")
	}
	disk := t.TempDir()
	if err := syscall.Mount("tmpfs", disk, "tmpfs", 0, "size="+strconv.Itoa(diskSize)); err != nil {
		t.Skipf("cannot mount a tmpfs on %s: %v", disk, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(disk, 0); err != nil {
			t.Errorf("unmount %s: %v", disk, err)
		}
	})
	bin := buildBinary(t)
	home := filepath.Join(disk, "home")
	httpAddr := freeAddr(t)
	if err := node.Init(node.InitOptions{Home: home, ChainID: "fulldisk", HTTPAddr: httpAddr,
		RPCAddr: "tcp://" + freeAddr(t), P2PAddr: "tcp://" + freeAddr(t), BlockInterval: 100 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := api.NewClient(httpAddr)
	committingPast := func(what string, p *nodeProc, h int64) {
		t.Helper()
		testutil.WaitFor(t, what, 30*time.Second, func() (bool, error) {
			select {
			case <-p.done:
				t.Fatalf("bftmon start exited waiting for %s: %v\n%s", what, p.err, p.stderr.String())
			default:
			}
			st, err := c.Status(ctx)
			return err == nil && st.Committing && st.Height > h, err
		})
	}

	p := startNodeProc(t, bin, home)
	committingPast("first block", p, 0)
	key := filepath.Join(home, node.OperatorKeyFile)
	if out, err := runCLI("", "kv", "put", "app/before", "written before the disk filled", "--key", key, "--addr", httpAddr); err != nil {
		t.Fatalf("kv put: %v\n%s", err, out)
	}
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hashBefore, err := c.AppHash(ctx, st.Height)
	if err != nil {
		t.Fatal(err)
	}

	fill := filepath.Join(disk, "fill")
	fillDisk(t, fill)
	if code := p.exitCode(t, 30*time.Second); code != 1 {
		t.Fatalf("exit code %d on a full disk, want 1; output:\n%s", code, p.stderr.String())
	}
	out := p.stderr.String()
	m := regexp.MustCompile(`Error: stopped: consensus failed after height (\d+) \(CONSENSUS FAILURE!!!: [^\n]*no space left on device\); a full or failing disk is the usual cause: check the disk of ` +
		regexp.QuoteMeta(filepath.Join(home, "data")) + ` \(0 KiB of [^)]* free\), then restart the node`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("last words on a full disk do not say what failed and where; output:\n%s", out)
	}
	failedAt, _ := strconv.ParseInt(m[1], 10, 64)
	if _, err := c.Status(ctx); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("GET /v1/status after the exit: %v, want connection refused", err)
	}

	// A supervisor restarts it at once: the disk is still full.
	again := startNodeProc(t, bin, home)
	if code := again.exitCode(t, 30*time.Second); code != 1 {
		t.Fatalf("exit code %d starting on a full disk, want 1; output:\n%s", code, again.stderr.String())
	}
	if want := fmt.Sprintf("free on the filesystem of %s; a node needs at least 256.0 MiB free to start", home); !strings.Contains(again.stderr.String(), want) {
		t.Fatalf("start on a full disk does not say %q:\n%s", want, again.stderr.String())
	}

	// Space comes back; the supervisor's next restart resumes.
	if err := os.Remove(fill); err != nil {
		t.Fatal(err)
	}
	p = startNodeProc(t, bin, home)
	committingPast(fmt.Sprintf("a commit past height %d, where the disk filled", failedAt), p, failedAt)
	kv, _, err := c.KVGet(ctx, "app/before", nil)
	if err != nil || kv == nil || string(kv.Value) != "written before the disk filled" {
		t.Fatalf("app/before after the restart: %+v, %v", kv, err)
	}
	if h, err := c.AppHash(ctx, hashBefore.Height); err != nil || h != hashBefore {
		t.Fatalf("app hash at height %d after the restart: %+v, %v; before the disk filled: %+v", hashBefore.Height, h, err, hashBefore)
	}
	// It commits writes again.
	if out, err := runCLI("", "kv", "put", "app/after", "written after the restart", "--key", key, "--addr", httpAddr); err != nil {
		t.Fatalf("kv put after the restart: %v\n%s", err, out)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.exitCode(t, 30*time.Second); code != 0 {
		t.Fatalf("exit code %d on SIGTERM, want 0; output:\n%s", code, p.stderr.String())
	}
}
