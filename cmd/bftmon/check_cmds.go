package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/checks"
	"github.com/bftmon/bftmon/node"
)

func newCheckCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "check", Short: "Run checks locally, as this machine's observer would"}
	cmd.AddCommand(newCheckRunCmd())
	return cmd
}

func newCheckRunCmd() *cobra.Command {
	var file, only, httpURL string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "run -f FILE [--check ID] | --http URL",
		Short: "Run a service file's checks once and print Nagios-style lines (exit 0 ok, 1 warning, 2 critical, 3 unknown)",
		Long: `Run the checks of a service file once, from this machine, without a node,
and print one line per check as a Nagios plugin would:

  STATUS - output | perfdata

The exit code is the Nagios code of the worst result, so 'bftmon check run'
can itself serve as a Nagios plugin.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var run []types.Check
			switch {
			case file != "" && httpURL != "":
				return fmt.Errorf("give -f FILE or --http URL, not both")
			case httpURL != "":
				// One GET, any 2xx or 3xx passing: what a container's
				// health check needs, without a shell or a file.
				run = []types.Check{{Id: "http", Kind: "http", Http: &types.HTTPParams{Url: httpURL, Method: "GET"},
					IntervalMs: max(timeout, time.Second).Milliseconds(), TimeoutMs: timeout.Milliseconds()}}
			case file == "":
				return fmt.Errorf("give the service file with -f FILE (see docs/service.example.yaml), or a URL with --http")
			default:
				data, err := os.ReadFile(file)
				if err != nil {
					return err
				}
				si, err := api.ParseServiceFile(data)
				if err != nil {
					return fmt.Errorf("%s: %w", file, err)
				}
				for _, c := range si.Checks {
					if only == "" || c.Id == only {
						run = append(run, c)
					}
				}
			}
			switch {
			case len(run) == 0 && only != "":
				return fmt.Errorf("%s has no check %q", file, only)
			case len(run) == 0:
				return fmt.Errorf("%s has no checks", file)
			}
			worst := types.STATUS_PASSING
			for _, c := range run {
				if checks.IsPassive(c) {
					return fmt.Errorf("check %s is passive: nothing to run; submit its results with 'bftmon submit'", c.Id)
				}
				r := checks.RunOnce(cmd.Context(), c)
				line := checks.NagiosLine(r)
				if len(run) > 1 {
					line = c.Id + ": " + line
				}
				fmt.Fprintln(cmd.OutOrStdout(), line)
				if r.Status.Severity() > worst.Severity() {
					worst = r.Status
				}
			}
			if code := worst.ExitCode(); code != 0 {
				return exitError{code}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "service file (YAML or JSON)")
	cmd.Flags().StringVar(&only, "check", "", "run only the check with this id")
	cmd.Flags().StringVar(&httpURL, "http", "", "instead of a file: GET this URL once, passing on any 2xx or 3xx")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Second, "with --http: the request's timeout")
	return cmd
}

func newSubmitCmd() *cobra.Command {
	var f clientFlags
	var tokenFile string
	cmd := &cobra.Command{
		Use:   "submit SERVICE/INSTANCE/CHECK CODE [OUTPUT]",
		Short: "Submit a passive check result to this machine's observer",
		Long: `Submit the result of a passive check to the local node, whose observer signs
it into its next batch. CODE is a Nagios code (0 ok, 1 warning, 2 critical,
3 unknown) or a status name, or a Nagios host state name (UP, DOWN,
UNREACHABLE: pass $HOSTSTATE$ from an ochp_command, not $HOSTSTATEID$);
OUTPUT is the plugin's output, performance data after '|' included.

The node takes results only with its observe token, since its observer
signs them: submit reads it from --token-file FILE, else from the
environment variable BFTMON_OBSERVE_TOKEN, else from the node home's
config/observe_token ($BFTMON_HOME, default ~/.bftmon), which the node writes
with mode 0600.

As Nagios' ocsp_command (docs/nagios.md):

  bftmon submit --token-file /etc/nagios4/bftmon_observe_token "$_SERVICEBFTMON_CHECK$" $SERVICESTATEID$ "$SERVICEOUTPUT$|$SERVICEPERFDATA$"`,
		Args: cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			parts := strings.Split(args[0], "/")
			if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
				return fmt.Errorf("check %q: want SERVICE/INSTANCE/CHECK", args[0])
			}
			code, err := nagiosCode(args[1])
			if err != nil {
				return err
			}
			pr := api.PassiveResult{Service: parts[0], Instance: parts[1], Check: parts[2], Code: code}
			if len(args) == 3 {
				pr.Output = args[2]
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			token, err := observeToken(tokenFile)
			if err != nil {
				return err
			}
			ack, err := c.Observe(cmd.Context(), token, pr)
			if err != nil {
				return err
			}
			if f.output == "json" {
				return printJSON(cmd.OutOrStdout(), ack)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "queued %s %s for observer %s\n", ack.Check, ack.Status, ack.Observer)
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&tokenFile, "token-file", "", "file holding the node's observe token (default: env BFTMON_OBSERVE_TOKEN, else $BFTMON_HOME/"+node.ObserveTokenFile+")")
	return cmd
}

// observeToken is the token POST /v1/observe requires: read from file if
// given, else $BFTMON_OBSERVE_TOKEN, else the home's config/observe_token.
func observeToken(file string) (string, error) {
	if file != "" {
		tok, err := node.ReadObserveToken(file)
		if err != nil {
			return "", fmt.Errorf("--token-file: %w (give a file holding the node's observe token, a copy of its %s that this user can read)", err, node.ObserveTokenFile)
		}
		return tok, nil
	}
	if tok := strings.TrimSpace(os.Getenv("BFTMON_OBSERVE_TOKEN")); tok != "" {
		return tok, nil
	}
	home := defaultHome()
	tok, err := node.ObserveToken(home)
	if err != nil {
		return "", fmt.Errorf("%w: the node writes %s in its home at start; run 'bftmon submit' on the observer's host as a user who can read it, with BFTMON_HOME set to the node's home (now %s), or pass --token-file FILE or set BFTMON_OBSERVE_TOKEN",
			err, node.ObserveTokenFile, home)
	}
	return tok, nil
}

// nagiosCode reads a Nagios code (0..3), a status name, or a Nagios host
// state name ($HOSTSTATE$: UP is ok, DOWN critical, UNREACHABLE unknown;
// host state ids are not service codes: DOWN is 1).
func nagiosCode(s string) (int, error) {
	switch strings.ToUpper(s) {
	case "UP":
		return 0, nil
	case "DOWN":
		return 2, nil
	case "UNREACHABLE":
		return 3, nil
	}
	if n, err := strconv.Atoi(s); err == nil {
		if n < 0 || n > 3 {
			return 0, fmt.Errorf("code %d: want 0 (ok), 1 (warning), 2 (critical) or 3 (unknown)", n)
		}
		return n, nil
	}
	if strings.EqualFold(s, "ok") {
		return 0, nil
	}
	st, err := types.ParseStatus(strings.ToLower(s))
	if err != nil || st == types.STATUS_NONE || st > types.STATUS_UNKNOWN {
		return 0, fmt.Errorf("code %q: want 0..3 or ok, passing, warning, critical, unknown (or a host state: up, down, unreachable)", s)
	}
	return st.ExitCode(), nil
}
