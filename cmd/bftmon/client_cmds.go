package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/keys"
	"github.com/bftmon/bftmon/node"
	"github.com/bftmon/bftmon/verify"
)

// clientFlags are the flags every client command takes.
type clientFlags struct {
	addr   string
	output string
	// wait is --wait: how long to wait for a node that is not up, or
	// still catching up, before failing.
	wait time.Duration
	cmd  *cobra.Command
}

// writeWait is the default --wait of the commands that send transactions:
// long enough for a network started together with them to come up.
const writeWait = 60 * time.Second

// add adds the client flags to cmd; reads fail at once when the node is
// not up (--wait 0), unless told to wait.
func (f *clientFlags) add(cmd *cobra.Command) { f.addWait(cmd, 0) }

// addWait adds the client flags with wait as --wait's default.
func (f *clientFlags) addWait(cmd *cobra.Command, wait time.Duration) {
	addr := os.Getenv("BFTMON_ADDR")
	if addr == "" {
		addr = "127.0.0.1:8500"
	}
	f.cmd = cmd
	cmd.Flags().StringVar(&f.addr, "addr", addr, "node HTTP API address (env BFTMON_ADDR)")
	cmd.Flags().StringVarP(&f.output, "output", "o", "table", "output format: table or json")
	cmd.Flags().DurationVar(&f.wait, "wait", wait, "wait this long for a node that is not up yet or still catching up, saying so on stderr (0: fail at once)")
}

func (f *clientFlags) client() (*api.Client, error) {
	if f.output != "table" && f.output != "json" {
		return nil, fmt.Errorf("--output %q: want table or json", f.output)
	}
	if f.wait < 0 {
		return nil, fmt.Errorf("--wait %s: want 0 (fail at once) or a positive duration such as 60s", f.wait)
	}
	return api.NewClient(f.addr).WithWait(f.wait, f.cmd.ErrOrStderr()), nil
}

// sendTimeout bounds a command that sends a transaction: the wait for the
// node, then up to a minute for the commit.
func (f *clientFlags) sendTimeout() time.Duration { return f.wait + 60*time.Second }

// table starts a table on cmd's output, coloured on a terminal.
func (f *clientFlags) table(cmd *cobra.Command, header ...string) *table {
	return newTable(cmd.OutOrStdout(), useColor(cmd.OutOrStdout()), header...)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// keyPath is --key, else $BFTMON_KEY, else the operator key of the home.
func keyPath(flag string) string {
	if flag != "" {
		return flag
	}
	if k := os.Getenv("BFTMON_KEY"); k != "" {
		return k
	}
	return filepath.Join(defaultHome(), node.OperatorKeyFile)
}

func loadOperatorKey(flag string) (keys.Key, error) {
	p := keyPath(flag)
	k, err := keys.Load(p)
	if err != nil {
		return k, fmt.Errorf("operator key %s: %w ('bftmon dev' and 'bftmon init' write one; or pass --key)", p, err)
	}
	return k, nil
}

func newServiceCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "service", Short: "Register, list, show and deregister services"}
	cmd.AddCommand(newServiceRegisterCmd(), newServiceListCmd(), newServiceShowCmd(), newServiceDeregisterCmd())
	return cmd
}

func newServiceRegisterCmd() *cobra.Command {
	var f clientFlags
	var files []string
	var key string
	cmd := &cobra.Command{
		Use:   "register -f FILE [-f FILE...]",
		Short: "Register or update service instances from YAML or JSON files",
		Long: `Register or update one service instance per file, in the order given, each
as one signed transaction. Files are all read and checked before anything is
sent. With --wait (default 60s) a node that is not up yet, or still catching
up with its peers, is waited for with a progress line on stderr.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			if len(files) == 0 {
				return errors.New("no service file: pass -f FILE (see docs/service.example.yaml)")
			}
			var insts []types.ServiceInstance
			for _, file := range files {
				data, err := os.ReadFile(file)
				if err != nil {
					return fmt.Errorf("read service file: %w", err)
				}
				inst, err := api.ParseServiceFile(data)
				if err != nil {
					return fmt.Errorf("%s: %w", file, err)
				}
				insts = append(insts, inst)
			}
			k, err := loadOperatorKey(key)
			if err != nil {
				return err
			}
			var results []api.TxResult
			for _, inst := range insts {
				ctx, cancel := context.WithTimeout(cmd.Context(), f.sendTimeout())
				res, err := c.Register(ctx, k.Private, inst)
				cancel()
				if err != nil {
					return err
				}
				results = append(results, res)
				if f.output != "json" {
					fmt.Fprintf(cmd.OutOrStdout(), "registered %s/%s at height %d\n", inst.Name, inst.Id, res.Height)
				}
			}
			if f.output == "json" {
				if len(results) == 1 {
					return printJSON(cmd.OutOrStdout(), results[0])
				}
				return printJSON(cmd.OutOrStdout(), results)
			}
			return nil
		},
	}
	f.addWait(cmd, writeWait)
	cmd.Flags().StringArrayVarP(&files, "file", "f", nil, "service definition file (YAML or JSON; repeatable)")
	cmd.Flags().StringVar(&key, "key", "", "operator key file (env BFTMON_KEY; default $BFTMON_HOME/config/operator_key.json)")
	return cmd
}

func newServiceDeregisterCmd() *cobra.Command {
	var f clientFlags
	var key string
	cmd := &cobra.Command{
		Use:   "deregister NAME ID",
		Short: "Remove a service instance",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			k, err := loadOperatorKey(key)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), f.sendTimeout())
			defer cancel()
			res, err := c.Deregister(ctx, k.Private, args[0], args[1])
			if err != nil {
				return err
			}
			if f.output == "json" {
				return printJSON(cmd.OutOrStdout(), res)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deregistered %s/%s at height %d\n", args[0], args[1], res.Height)
			return nil
		},
	}
	f.addWait(cmd, writeWait)
	cmd.Flags().StringVar(&key, "key", "", "operator key file (env BFTMON_KEY)")
	return cmd
}

// newServiceListCmd is 'bftmon service list'; newServicesCmd the same as
// 'bftmon services'.
func newServiceListCmd() *cobra.Command { return servicesCmd("list") }

func newServicesCmd() *cobra.Command { return servicesCmd("services") }

func servicesCmd(use string) *cobra.Command {
	var f clientFlags
	var filter filterFlags
	var v verifyFlags
	cmd := &cobra.Command{
		Use:   use,
		Short: "List services with their instance counts, agreed status and tags",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			var list []api.ServiceSummary
			verified, err := v.read(cmd.Context(), c, "/v1/services"+filter.options().Encode(), &list, func() (err error) {
				list, _, err = c.Services(cmd.Context(), filter.options())
				return err
			})
			if err != nil {
				return err
			}
			if f.output == "json" {
				defer sayVerified(cmd, f.output, verified)
				return printJSON(cmd.OutOrStdout(), list)
			}
			tb := f.table(cmd, "NAME", "INSTANCES", "STATUS", "TAGS")
			for _, s := range list {
				tb.row(s.Name, s.Instances, s.Status, strings.Join(s.Tags, ","))
			}
			defer sayVerified(cmd, f.output, verified)
			return tb.flush()
		},
	}
	f.add(cmd)
	filter.add(cmd, true)
	v.add(cmd, true)
	return cmd
}

// filterFlags are the instance filters of the read commands (the API's
// ?status ?tag ?dc).
type filterFlags struct {
	status, tags []string
	dc           string
	meta         map[string]string
}

func (ff *filterFlags) add(cmd *cobra.Command, withDC bool) {
	cmd.Flags().StringSliceVar(&ff.status, "status", nil, "only instances with these agreed statuses (passing, warning, critical, unknown, stale, disputed, pending; repeatable or comma-separated)")
	cmd.Flags().StringArrayVar(&ff.tags, "tag", nil, "only instances carrying this tag (repeatable: all of them)")
	cmd.Flags().StringToStringVar(&ff.meta, "meta", nil, "only instances whose metadata has KEY=VALUE (repeatable or comma-separated: all of them)")
	if withDC {
		cmd.Flags().StringVar(&ff.dc, "dc", "", "only instances registered in this datacenter")
	}
}

func (ff *filterFlags) options() *api.QueryOptions {
	return &api.QueryOptions{Status: ff.status, Tags: ff.tags, Datacenter: ff.dc, Meta: ff.meta}
}

func newServiceShowCmd() *cobra.Command {
	var f clientFlags
	var v verifyFlags
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a service's instances, checks and every observer's view",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			var insts []api.Instance
			verified, err := v.read(cmd.Context(), c, "/v1/services/"+url.PathEscape(args[0]), &insts, func() (err error) {
				insts, _, err = c.Service(cmd.Context(), args[0], nil)
				return err
			})
			if err != nil {
				return err
			}
			defer sayVerified(cmd, f.output, verified)
			if f.output == "json" {
				return printJSON(cmd.OutOrStdout(), insts)
			}
			w := cmd.OutOrStdout()
			for _, in := range insts {
				fmt.Fprintf(w, "%s/%s  %s:%d  dc=%s  status=%s  tags=%s\n", in.Service, in.ID, in.Address, in.Port, in.Datacenter, in.Status, strings.Join(in.Tags, ","))
				for _, ch := range in.Checks {
					fmt.Fprintf(w, "  check %s (%s %s every %s): verdict %s since height %d, hard %s since height %d\n",
						ch.ID, ch.Kind, ch.Target, ch.Interval, ch.Status, ch.StatusHeight, ch.HardStatus, ch.HardHeight)
					tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "    OBSERVER\tDC\tSTATUS\tFRESH\tOUTPUT")
					for _, o := range ch.Observers {
						fmt.Fprintf(tw, "    %s\t%s\t%s\t%v\t%s\n", o.Name, o.Datacenter, o.Status, o.Fresh, o.Output)
					}
					tw.Flush()
				}
			}
			return nil
		},
	}
	f.add(cmd)
	v.add(cmd, true)
	return cmd
}

// exitError carries a process exit code (Nagios-style) out of a command.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func newHealthCmd() *cobra.Command {
	var f clientFlags
	var filter filterFlags
	var passing bool
	var near string
	var v verifyFlags
	cmd := &cobra.Command{
		Use:   "health NAME",
		Short: "Show the agreed health of a service's instances (exit 0 passing, 1 warning or other, 2 critical or none)",
		Long: `Show the agreed health of a service: each instance's checks with their
verdict, hard (confirmed) status, the height since which it holds, and how
many observers' fresh reports agree.

As a Nagios plugin (docs/nagios.md) it exits 0 when every instance shown is
agreed passing, 2 when one is agreed critical or when no instance matches,
and 1 otherwise (warning, disputed, stale, pending). With --verify it exits 3
(UNKNOWN) when the answer cannot be verified, saying why on stderr, and
prints "verified at height H" when it was.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			opts := filter.options()
			if passing {
				opts.Status = append(opts.Status, "passing")
			}
			opts.Near = near
			var insts []api.Instance
			verified, err := v.read(cmd.Context(), c, "/v1/services/"+url.PathEscape(args[0])+opts.Encode(), &insts, func() (err error) {
				insts, _, err = c.Service(cmd.Context(), args[0], opts)
				return err
			})
			if err != nil && (errors.Is(err, verify.ErrNotVerified) || v.on && !errors.Is(err, api.ErrNotFound)) {
				return unknownExit(cmd.ErrOrStderr(), args[0], err)
			}
			if err != nil {
				return err
			}
			defer sayVerified(cmd, f.output, verified)
			if f.output == "json" {
				if err := printJSON(cmd.OutOrStdout(), insts); err != nil {
					return err
				}
			} else {
				header := []string{"INSTANCE", "ADDRESS", "DC", "CHECK", "STATUS", "HARD", "SINCE", "OBSERVERS"}
				if near != "" {
					header = append(header, "DISTANCE")
				}
				tb := f.table(cmd, header...)
				for _, in := range insts {
					for _, ch := range in.Checks {
						agree := 0
						for _, o := range ch.Observers {
							if o.Fresh && o.Status == ch.Status {
								agree++
							}
						}
						cells := []any{in.ID, fmt.Sprintf("%s:%d", in.Address, in.Port), in.Datacenter, ch.ID, ch.Status, ch.HardStatus, ch.HardHeight,
							fmt.Sprintf("%d/%d agree", agree, len(ch.Observers))}
						if near != "" {
							cells = append(cells, distance(in.DistanceMs))
						}
						tb.row(cells...)
					}
				}
				if err := tb.flush(); err != nil {
					return err
				}
			}
			if len(insts) == 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "CRITICAL - no instance of %s matches\n", args[0])
				return exitError{2}
			}
			code := 0
			for _, in := range insts {
				switch {
				case in.Status == "critical":
					code = 2
				case in.Status != "passing" && code == 0:
					code = 1
				}
			}
			if code != 0 {
				return exitError{code}
			}
			return nil
		},
	}
	f.add(cmd)
	filter.add(cmd, true)
	cmd.Flags().BoolVar(&passing, "passing", false, "only instances agreed passing (as --status passing)")
	cmd.Flags().StringVar(&near, "near", "", "order instances nearest to this datacenter first, by the latency its observers agree on")
	v.add(cmd, true)
	return cmd
}

// deliveredCell says who delivered an alert to which receiver, and how
// long after it was committed: "pager by node1 +0.4s", or "-".
func deliveredCell(a api.Alert) string {
	if len(a.Deliveries) == 0 {
		return "-"
	}
	var parts []string
	for _, d := range a.Deliveries {
		parts = append(parts, fmt.Sprintf("%s by %s +%.1fs", d.Receiver, orDefaultStr(d.Name, d.Observer), d.Time.Sub(a.Time).Seconds()))
	}
	return strings.Join(parts, ", ")
}

// distance is a DISTANCE cell: milliseconds, or "-" when unknown.
func distance(ms *float64) string {
	if ms == nil {
		return "-"
	}
	return fmt.Sprintf("%.1fms", *ms)
}

func newVersionCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := map[string]string{"version": node.Version, "go": runtime.Version()}
			if bi, ok := debug.ReadBuildInfo(); ok {
				for _, s := range bi.Settings {
					if s.Key == "vcs.revision" {
						v["commit"] = s.Value
					}
				}
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), v)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "bftmon %s (commit %s, %s)\n", v["version"], orDefaultStr(v["commit"], "unknown"), v["go"])
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func orDefaultStr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func newObserversCmd() *cobra.Command {
	var f clientFlags
	var dc string
	var v verifyFlags
	cmd := &cobra.Command{
		Use:   "observers",
		Short: "List the observers with their standing (how often they disagree with the agreed verdicts)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			opts := &api.QueryOptions{Datacenter: dc}
			var list []api.Observer
			verified, err := v.read(cmd.Context(), c, "/v1/observers"+opts.Encode(), &list, func() (err error) {
				list, _, err = c.Observers(cmd.Context(), opts)
				return err
			})
			if err != nil {
				return err
			}
			defer sayVerified(cmd, f.output, verified)
			if f.output == "json" {
				return printJSON(cmd.OutOrStdout(), list)
			}
			tb := f.table(cmd, "NAME", "DATACENTER", "WEIGHT", "AGREED", "DISAGREED", "STANDING", "ID")
			for _, o := range list {
				standing := "good"
				if o.Suspect {
					standing = fmt.Sprintf("suspect since %d", o.SuspectHeight)
				}
				tb.row(o.Name, o.Datacenter, o.Weight, o.Agreed, fmt.Sprintf("%d (%.1f%%)", o.Disagreed, o.DisagreedPercent), standing, o.ID)
			}
			return tb.flush()
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&dc, "dc", "", "only the observers of this datacenter")
	v.add(cmd, true)
	return cmd
}

func newAlertsCmd() *cobra.Command {
	var f clientFlags
	var opts api.QueryOptions
	var v verifyFlags
	cmd := &cobra.Command{
		Use:   "alerts",
		Short: "List committed alerts, newest first",
		Long: `List the alerts the network committed, newest first: agreed state changes
of checks (state_change), checks whose observers disagree (disputed) or went
silent (stale), and observers that became suspect (observer_suspect),
with the committed delivery receipts: which node delivered each to which
receiver, and when.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			if opts.Limit < 1 {
				return fmt.Errorf("--limit %d: want a positive number of alerts", opts.Limit)
			}
			var list []api.Alert
			verified, err := v.read(cmd.Context(), c, "/v1/alerts"+opts.Encode(), &list, func() (err error) {
				list, _, err = c.Alerts(cmd.Context(), &opts)
				return err
			})
			if err != nil {
				return err
			}
			defer sayVerified(cmd, f.output, verified)
			if f.output == "json" {
				return printJSON(cmd.OutOrStdout(), list)
			}
			tb := f.table(cmd, "HEIGHT", "TIME", "KIND", "SUBJECT", "FROM", "TO", "DELIVERED", "ID")
			for _, a := range list {
				subject := a.Service + "/" + a.Instance + "/" + a.Check
				if a.Observer != "" {
					subject = "observer " + a.Observer
				}
				tb.row(a.Height, a.Time.Local().Format(time.DateTime), a.Kind, subject, a.From, a.To, deliveredCell(a), a.ID)
			}
			return tb.flush()
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&opts.Service, "service", "", "only alerts about this service")
	cmd.Flags().StringVar(&opts.Kind, "kind", "", "only alerts of this kind: state_change, disputed, stale, observer_suspect")
	cmd.Flags().StringSliceVar(&opts.Status, "status", nil, "only alerts to these statuses")
	cmd.Flags().IntVar(&opts.Limit, "limit", 50, "at most this many alerts")
	cmd.Flags().BoolVar(&opts.Pending, "pending", false, "only alerts no node has committed a delivery receipt for yet")
	v.add(cmd, true)
	return cmd
}
