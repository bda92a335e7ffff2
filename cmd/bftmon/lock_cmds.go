package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
)

func newLockCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lock",
		Short: "Leader election on a key's lock: acquire it (and run a command while held), show its holder",
	}
	cmd.AddCommand(newLockAcquireCmd(), newLockHolderCmd())
	return cmd
}

// lockSession is the session lock acquire holds, and the means to sign
// its transactions.
type lockSession struct {
	c   *api.Client
	key ed25519.PrivateKey
	id  string
}

func newLockAcquireCmd() *cobra.Command {
	var f clientFlags
	var key, instance, name string
	var ttl, lockDelay, grace time.Duration
	cmd := &cobra.Command{
		Use:   "acquire KEY --instance SERVICE/ID [-- COMMAND ...]",
		Short: "Wait until this instance holds KEY's lock, then run COMMAND while it holds it (like consul lock)",
		Long: `acquire creates a session for the instance (with --ttl and --lock-delay),
waits until the session holds KEY's lock, watching the key with blocking
queries, and prints "acquired KEY (session S, lock index N)". It then runs
COMMAND (with BFTMON_LOCK_KEY and BFTMON_LOCK_SESSION in its environment)
while it holds the lock, renewing the session meanwhile; without a command
it holds the lock until interrupted.

The lock is lost when the session is invalidated (the instance's agreed
hard status became critical, its TTL lapsed, it was destroyed) or the key
is taken: the command then gets SIGTERM, and SIGKILL after --grace, and
acquire exits 1. When the command exits, or on SIGINT/SIGTERM, acquire
releases the lock and destroys the session; it exits with the command's
exit code (0 when interrupted).`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			lockKey, command := args[0], args[1:]
			if cmd.ArgsLenAtDash() == -1 && len(command) > 0 {
				return fmt.Errorf("lock acquire: put the command after --: bftmon lock acquire %s --instance %s -- %s", lockKey, instance, strings.Join(command, " "))
			}
			service, id, ok := strings.Cut(instance, "/")
			if !ok || service == "" || id == "" {
				return fmt.Errorf("lock acquire: --instance %q: want SERVICE/ID", instance)
			}
			if err := app.ValidKVKey(lockKey, false); err != nil {
				return fmt.Errorf("lock acquire: %w", err)
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			k, err := loadOperatorKey(key)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			s := &lockSession{c: c, key: k.Private}
			return s.run(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), lockArgs{key: lockKey, service: service, instance: id, name: name, ttl: ttl, lockDelay: lockDelay, grace: grace, command: command})
		},
	}
	f.addWait(cmd, writeWait)
	cmd.Flags().StringVar(&key, "key", "", "operator key file (env BFTMON_KEY; default $BFTMON_HOME/config/operator_key.json)")
	cmd.Flags().StringVar(&instance, "instance", "", "the service instance the session is for, SERVICE/ID (required)")
	cmd.Flags().StringVar(&name, "name", "bftmon lock", "the session's name")
	cmd.Flags().DurationVar(&ttl, "ttl", 15*time.Second, "session TTL (10s .. 24h), renewed every third of it")
	cmd.Flags().DurationVar(&lockDelay, "lock-delay", 15*time.Second, "after the session ends, how long nobody may take the lock (0 .. 60s)")
	cmd.Flags().DurationVar(&grace, "grace", 5*time.Second, "after SIGTERM, how long the command has before SIGKILL")
	_ = cmd.MarkFlagRequired("instance")
	return cmd
}

type lockArgs struct {
	key, service, instance, name string
	ttl, lockDelay, grace        time.Duration
	command                      []string
}

// errLost is the lock lost while held.
var errLost = errors.New("lost the lock")

func (s *lockSession) run(ctx context.Context, out, errOut io.Writer, a lockArgs) error {
	id, _, err := s.c.SessionCreate(ctx, s.key, types.SessionCreate{Service: a.service, Instance: a.instance, Name: a.name, TtlMs: a.ttl.Milliseconds(),
		Behavior: app.BehaviorRelease, LockDelayMs: a.lockDelay.Milliseconds(), NoLockDelay: a.lockDelay == 0})
	if err != nil {
		return fmt.Errorf("lock %s: %w", a.key, err)
	}
	s.id = id
	fmt.Fprintf(errOut, "session %s for %s/%s (ttl %s, lock-delay %s); waiting for %s\n", s.id, a.service, a.instance, a.ttl, a.lockDelay, a.key)
	// Everything below ends with the session destroyed, even when ctx is.
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = s.c.SessionDestroy(dctx, s.key, s.id)
	}()
	lost := make(chan error, 2)
	if a.ttl > 0 {
		go s.renew(ctx, a.ttl, lost)
	}
	lock, err := s.acquire(ctx, a.key, lost)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("lock %s: %w", a.key, err)
	}
	fmt.Fprintf(out, "acquired %s (session %s, lock index %d)\n", a.key, s.id, lock.LockIndex)
	go s.watch(ctx, a.key, lock.ModifyIndex, lost)
	release := func() {
		rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := s.c.KVPut(rctx, s.key, types.KVSet{Key: a.key, Value: lock.Value, Release: s.id}); err != nil {
			fmt.Fprintf(errOut, "lock %s: %v\n", a.key, err)
		}
	}
	if len(a.command) == 0 {
		select {
		case <-ctx.Done():
			release()
			return nil
		case err := <-lost:
			return fmt.Errorf("lock %s: %w: %v", a.key, errLost, err)
		}
	}
	child := exec.Command(a.command[0], a.command[1:]...)
	child.Stdin, child.Stdout, child.Stderr = os.Stdin, out, errOut
	child.Env = append(os.Environ(), "BFTMON_LOCK_KEY="+a.key, "BFTMON_LOCK_SESSION="+s.id)
	child.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := child.Start(); err != nil {
		release()
		return fmt.Errorf("lock %s: start %s: %w", a.key, a.command[0], err)
	}
	exited := make(chan error, 1)
	go func() { exited <- child.Wait() }()
	stopChild := func() {
		_ = syscall.Kill(-child.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(a.grace):
			_ = syscall.Kill(-child.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	}
	select {
	case err := <-exited:
		release()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return exitError{ee.ExitCode()}
		}
		if err != nil {
			return fmt.Errorf("lock %s: %s: %w", a.key, a.command[0], err)
		}
		return nil
	case <-ctx.Done():
		stopChild()
		release()
		return nil
	case err := <-lost:
		fmt.Fprintf(errOut, "lost %s: %v; stopping %s\n", a.key, err, a.command[0])
		stopChild()
		return fmt.Errorf("lock %s: %w: %v", a.key, errLost, err)
	}
}

// acquire tries to take the lock and, while another session holds it or
// its lock-delay lasts, waits with blocking queries on the key.
func (s *lockSession) acquire(ctx context.Context, key string, lost <-chan error) (api.Lock, error) {
	var index int64
	for {
		select {
		case err := <-lost:
			return api.Lock{}, err
		default:
		}
		l, meta, err := s.c.Lock(ctx, key, &api.QueryOptions{WaitIndex: index, WaitTime: 30 * time.Second})
		if err != nil {
			if ctx.Err() != nil {
				return l, ctx.Err()
			}
			return l, fmt.Errorf("watch: %w", err)
		}
		index = meta.Index
		switch {
		case l.Session == s.id:
			return l, nil
		case l.Session != "":
			continue // held: block until the key changes
		case l.LockDelayUntilMs > l.BlockTimeMs:
			// The lock-delay is block time: wait it out, then try.
			select {
			case <-time.After(time.Duration(l.LockDelayUntilMs-l.BlockTimeMs) * time.Millisecond):
			case <-ctx.Done():
				return l, ctx.Err()
			}
		}
		res, err := s.c.KVPut(ctx, s.key, types.KVSet{Key: key, Value: l.Value, Acquire: s.id})
		switch code := app.Code(res.Code); {
		case err == nil:
			index = 0
		case ctx.Err() != nil:
			return l, ctx.Err()
		case code == app.CodeUnauthorized || code == app.CodeNotFound:
			return l, err // the session is gone
		case code == app.CodeConflict && l.Session == "":
			// Free when read, refused when committed: taken by another
			// meanwhile, or still in its lock-delay at the block time the
			// put committed at (block time trails the clock by about a
			// block, more while rounds fail). Read again at once rather
			// than block on a key that a lock-delay running out does not
			// change: blocking, the next try waited out the whole 30 s
			// wait (a failover took 48 s with one of four validators down).
			index = 0
		}
		// Taken by another, or still in its lock-delay: look again.
	}
}

// watch blocks on the key while the lock is held and reports on lost
// when another session (or none) holds it.
func (s *lockSession) watch(ctx context.Context, key string, index uint64, lost chan<- error) {
	wait := int64(index)
	for ctx.Err() == nil {
		l, meta, err := s.c.Lock(ctx, key, &api.QueryOptions{WaitIndex: wait, WaitTime: 30 * time.Second})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			select { // a node not answering: ask again shortly
			case <-time.After(time.Second):
			case <-ctx.Done():
			}
			continue
		}
		if l.Session != s.id {
			held := "nobody"
			if l.Session != "" {
				held = fmt.Sprintf("session %s (%s/%s)", l.Session, l.Service, l.Instance)
			}
			lost <- fmt.Errorf("the agreed state at modify index %d has %s holding it (session invalidated or key taken)", l.ModifyIndex, held)
			return
		}
		wait = meta.Index
	}
}

// renew renews the session every third of its TTL; a refused renewal (the
// session is gone) is reported on lost.
func (s *lockSession) renew(ctx context.Context, ttl time.Duration, lost chan<- error) {
	t := time.NewTicker(ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		_, err := s.c.SessionRenew(ctx, s.key, s.id)
		if err != nil && ctx.Err() == nil && strings.Contains(err.Error(), "refused") {
			lost <- fmt.Errorf("session %s: %w", s.id, err)
			return
		}
	}
}

func newLockHolderCmd() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "holder KEY",
		Short: "Show who holds KEY's lock in the agreed state (exit 1 if nobody)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			l, _, err := c.Lock(cmd.Context(), args[0], nil)
			if err != nil {
				return err
			}
			if f.output == "json" {
				return printJSON(cmd.OutOrStdout(), l)
			}
			w := cmd.OutOrStdout()
			if l.Session == "" {
				fmt.Fprintf(w, "%s: no holder", args[0])
				if l.LockDelayUntilMs > l.BlockTimeMs {
					fmt.Fprintf(w, " (in its lock-delay for %s more)", time.Duration(l.LockDelayUntilMs-l.BlockTimeMs)*time.Millisecond)
				}
				fmt.Fprintln(w)
				return exitError{1}
			}
			fmt.Fprintf(w, "%s: held by session %s of %s/%s, lock index %d, since height %d\n", args[0], l.Session, l.Service, l.Instance, l.LockIndex, l.ModifyIndex)
			return nil
		},
	}
	f.add(cmd)
	return cmd
}
