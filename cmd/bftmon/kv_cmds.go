package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app/types"
)

// kvFlags are the flags of the kv and session commands that write: the
// operator key that signs (--key, default the home's), or a --token the
// node maps to a key it holds.
type kvFlags struct {
	clientFlags
	key, token string
}

func (f *kvFlags) add(cmd *cobra.Command) {
	f.addWait(cmd, writeWait)
	cmd.Flags().StringVar(&f.key, "key", "", "operator key file that signs (env BFTMON_KEY; default $BFTMON_HOME/config/operator_key.json)")
	cmd.Flags().StringVar(&f.token, "token", os.Getenv("BFTMON_TOKEN"), "instead of a key, a token the node maps to an operator key it holds (its config/tokens.json; env BFTMON_TOKEN)")
}

// readValue reads a value argument: text, @FILE, or - for stdin.
func readValue(cmd *cobra.Command, arg string) ([]byte, error) {
	switch {
	case arg == "-":
		bz, err := io.ReadAll(cmd.InOrStdin())
		if err != nil {
			return nil, fmt.Errorf("read value from stdin: %w", err)
		}
		return bz, nil
	case strings.HasPrefix(arg, "@"):
		bz, err := os.ReadFile(arg[1:])
		if err != nil {
			return nil, fmt.Errorf("read value: %w", err)
		}
		return bz, nil
	}
	return []byte(arg), nil
}

func newKVCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kv",
		Short: "Read and write the replicated key/value store",
		Long: `Read and write the key/value store (Consul's /v1/kv). Writes are signed with
the operator key of the home or --key, or sent with --token to a node that maps
it to a key it holds; the operator's scope (its key prefixes in genesis, and
services/NAME/ for the services it may register) must cover the key.`,
	}
	cmd.AddCommand(newKVGetCmd(), newKVPutCmd(false), newKVPutCmd(true), newKVDeleteCmd(), newKVLsCmd(), newKVTxnCmd())
	return cmd
}

func newKVGetCmd() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "get KEY",
		Short: "Print a key's value (-o json: the entry)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			p, _, err := c.KVGet(cmd.Context(), args[0], nil)
			if err != nil {
				return fmt.Errorf("kv get %q: %w", args[0], err)
			}
			if p == nil {
				return fmt.Errorf("kv get %q: no such key", args[0])
			}
			if f.output == "json" {
				return printJSON(cmd.OutOrStdout(), p)
			}
			_, err = cmd.OutOrStdout().Write(p.Value)
			return err
		},
	}
	f.add(cmd)
	return cmd
}

func newKVPutCmd(cas bool) *cobra.Command {
	var f kvFlags
	var flags uint64
	var acquire, release string
	use, short := "put KEY VALUE|@FILE|-", "Write a key (VALUE, the file's content, or stdin)"
	if cas {
		use, short = "cas KEY INDEX VALUE|@FILE|-", "Write a key only if its modify index is INDEX (0: only if absent)"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(map[bool]int{false: 2, true: 3}[cas]),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			set := types.KVSet{Key: args[0], Flags: flags, Acquire: acquire, Release: release}
			valueArg := args[1]
			if cas {
				n, err := strconv.ParseUint(args[1], 10, 64)
				if err != nil {
					return fmt.Errorf("kv cas %q: index %q: want the entry's modify index (0: create only)", args[0], args[1])
				}
				set.Cas, set.CasIndex, valueArg = true, n, args[2]
			}
			if set.Value, err = readValue(cmd, valueArg); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), f.sendTimeout())
			defer cancel()
			if f.token != "" {
				q := url.Values{}
				if set.Cas {
					q.Set("cas", strconv.FormatUint(set.CasIndex, 10))
				}
				if flags != 0 {
					q.Set("flags", strconv.FormatUint(flags, 10))
				}
				if acquire != "" {
					q.Set("acquire", acquire)
				}
				if release != "" {
					q.Set("release", release)
				}
				ok, _, err := c.Token(f.token).KVPut(ctx, set.Key, set.Value, q)
				if err != nil {
					return fmt.Errorf("kv put %q: %w", set.Key, err)
				}
				if !ok {
					return fmt.Errorf("kv put %q: refused: the condition failed (cas index or lock): read the key for its current index", set.Key)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "wrote %s\n", set.Key)
				return nil
			}
			k, err := loadOperatorKey(f.key)
			if err != nil {
				return err
			}
			res, err := c.KVPut(ctx, k.Private, set)
			if err != nil {
				return err
			}
			if f.output == "json" {
				return printJSON(cmd.OutOrStdout(), res)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s at index %d\n", set.Key, res.Height)
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().Uint64Var(&flags, "flags", 0, "opaque flags kept with the entry")
	cmd.Flags().StringVar(&acquire, "acquire", "", "take the key's lock for this session while writing")
	cmd.Flags().StringVar(&release, "release", "", "release the key's lock held by this session while writing")
	return cmd
}

func newKVDeleteCmd() *cobra.Command {
	var f kvFlags
	var recurse bool
	var cas int64
	cmd := &cobra.Command{
		Use:   "delete KEY",
		Short: "Delete a key, or with --recurse every key that starts with it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			del := types.KVDelete{Key: args[0], Recurse: recurse}
			if cas >= 0 {
				del.Cas, del.CasIndex = true, uint64(cas)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), f.sendTimeout())
			defer cancel()
			if f.token != "" {
				q := url.Values{}
				if recurse {
					q.Set("recurse", "true")
				}
				if del.Cas {
					q.Set("cas", strconv.FormatUint(del.CasIndex, 10))
				}
				ok, _, err := c.Token(f.token).KVDelete(ctx, del.Key, q)
				if err == nil && !ok {
					err = errors.New("refused: the cas index is not the entry's")
				}
				if err != nil {
					return fmt.Errorf("kv delete %q: %w", del.Key, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "deleted %s\n", del.Key)
				return nil
			}
			k, err := loadOperatorKey(f.key)
			if err != nil {
				return err
			}
			res, err := c.KVDelete(ctx, k.Private, del)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted %s at index %d\n", del.Key, res.Height)
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&recurse, "recurse", false, "delete every key that starts with KEY")
	cmd.Flags().Int64Var(&cas, "cas", -1, "delete only if the entry's modify index is this")
	return cmd
}

func newKVLsCmd() *cobra.Command {
	var f clientFlags
	var recurse bool
	cmd := &cobra.Command{
		Use:   "ls [PREFIX]",
		Short: "List keys under a prefix (one level, '/' separated; --recurse: all, with indexes)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			prefix := ""
			if len(args) == 1 {
				prefix = args[0]
			}
			if recurse {
				list, _, err := c.KVList(cmd.Context(), prefix, nil)
				if err != nil {
					return fmt.Errorf("kv ls %q: %w", prefix, err)
				}
				if f.output == "json" {
					return printJSON(cmd.OutOrStdout(), list)
				}
				t := f.table(cmd, "KEY", "MODIFY", "FLAGS", "SESSION", "BYTES")
				for _, p := range list {
					t.row(p.Key, strconv.FormatUint(p.ModifyIndex, 10), strconv.FormatUint(p.Flags, 10), p.Session, strconv.Itoa(len(p.Value)))
				}
				return t.flush()
			}
			keys, _, err := c.KVKeys(cmd.Context(), prefix, "/", nil)
			if err != nil {
				return fmt.Errorf("kv ls %q: %w", prefix, err)
			}
			if f.output == "json" {
				return printJSON(cmd.OutOrStdout(), keys)
			}
			for _, k := range keys {
				fmt.Fprintln(cmd.OutOrStdout(), k)
			}
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&recurse, "recurse", false, "every key under the prefix, with its indexes")
	return cmd
}

func newKVTxnCmd() *cobra.Command {
	var f kvFlags
	cmd := &cobra.Command{
		Use:   "txn FILE|-",
		Short: "Apply up to 64 operations atomically from Consul's txn JSON ([{\"KV\": {\"Verb\": \"set\", ...}}])",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			arg := args[0]
			if arg != "-" {
				arg = "@" + arg
			}
			bz, err := readValue(cmd, arg)
			if err != nil {
				return err
			}
			var ops []api.TxnOp
			if err := json.Unmarshal(bz, &ops); err != nil {
				return fmt.Errorf("kv txn: %s: want Consul's txn JSON: %w", args[0], err)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), f.sendTimeout())
			defer cancel()
			if f.token != "" {
				resp, err := c.Token(f.token).Txn(ctx, ops)
				if err != nil {
					return fmt.Errorf("kv txn: %w", err)
				}
				if len(resp.Errors) > 0 {
					return fmt.Errorf("kv txn: nothing applied: op %d: %s", resp.Errors[0].OpIndex, resp.Errors[0].What)
				}
				return printJSON(cmd.OutOrStdout(), resp)
			}
			kops := make([]types.KVOp, len(ops))
			for i, op := range ops {
				if op.KV == nil {
					return fmt.Errorf("kv txn: op %d is not a KV operation", i)
				}
				kops[i] = types.KVOp{Verb: op.KV.Verb, Key: op.KV.Key, Value: op.KV.Value, Flags: op.KV.Flags, Index: op.KV.Index, Session: op.KV.Session}
			}
			k, err := loadOperatorKey(f.key)
			if err != nil {
				return err
			}
			res, err := c.KVTxn(ctx, k.Private, kops)
			if err != nil {
				return fmt.Errorf("%w (nothing applied)", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "applied %d operations at index %d\n", len(kops), res.Height)
			return nil
		},
	}
	f.add(cmd)
	return cmd
}

func newSessionCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "session", Short: "Create, inspect and destroy sessions of service instances"}
	var cf kvFlags
	var name, behavior string
	var ttl, delay string
	create := &cobra.Command{
		Use:   "create SERVICE/INSTANCE",
		Short: "Open a session for a registered instance; prints its id",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			svc, inst, ok := strings.Cut(args[0], "/")
			if !ok {
				return fmt.Errorf("session create %q: want SERVICE/INSTANCE", args[0])
			}
			m := types.SessionCreate{Service: svc, Instance: inst, Name: name, Behavior: behavior}
			if ttl != "" {
				d, err := parseDur(ttl)
				if err != nil {
					return fmt.Errorf("session create: --ttl: %w", err)
				}
				m.TtlMs = d
			}
			if delay != "" {
				d, err := parseDur(delay)
				if err != nil {
					return fmt.Errorf("session create: --lock-delay: %w", err)
				}
				m.LockDelayMs, m.NoLockDelay = d, d == 0
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), cf.sendTimeout())
			defer cancel()
			var id string
			if cf.token != "" {
				id, err = c.Token(cf.token).SessionCreate(ctx, api.SessionRequest{Name: name, Node: args[0], TTL: ttl, Behavior: behavior, LockDelay: delay})
			} else {
				k, kerr := loadOperatorKey(cf.key)
				if kerr != nil {
					return kerr
				}
				id, _, err = c.SessionCreate(ctx, k.Private, m)
			}
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), id)
			return nil
		},
	}
	cf.add(create)
	create.Flags().StringVar(&name, "name", "", "a label")
	create.Flags().StringVar(&ttl, "ttl", "", "TTL (10s..24h; renew within it); none by default")
	create.Flags().StringVar(&behavior, "behavior", "release", "release or delete the keys it holds when invalidated")
	create.Flags().StringVar(&delay, "lock-delay", "", "how long its keys stay unlockable after it is invalidated (default 15s, 0 for none)")

	var df kvFlags
	destroy := &cobra.Command{
		Use:   "destroy ID",
		Short: "Invalidate a session",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := df.client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), df.sendTimeout())
			defer cancel()
			if df.token != "" {
				return c.Token(df.token).SessionDestroy(ctx, args[0])
			}
			k, err := loadOperatorKey(df.key)
			if err != nil {
				return err
			}
			_, err = c.SessionDestroy(ctx, k.Private, args[0])
			return err
		},
	}
	df.add(destroy)

	var inf clientFlags
	info := &cobra.Command{
		Use:   "info ID",
		Short: "Show a live session",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := inf.client()
			if err != nil {
				return err
			}
			se, _, err := c.SessionInfo(cmd.Context(), args[0], nil)
			if err != nil {
				return fmt.Errorf("session info %s: %w", args[0], err)
			}
			if se == nil {
				return fmt.Errorf("session info %s: unknown or invalidated", args[0])
			}
			return printJSON(cmd.OutOrStdout(), se)
		},
	}
	inf.add(info)
	cmd.AddCommand(create, destroy, info)
	return cmd
}

// parseDur parses a duration flag into milliseconds.
func parseDur(s string) (int64, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q: want a duration such as 15s", s)
	}
	return d.Milliseconds(), nil
}
