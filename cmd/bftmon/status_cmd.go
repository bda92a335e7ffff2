package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/bftmon/bftmon/api"
)

// newStatusCmd is 'bftmon status': whether a node commits, as a health
// check (a container's, a load balancer's script) can use it.
func newStatusCmd() *cobra.Command {
	var f clientFlags
	var quiet bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show whether a node commits blocks (exit 0), or why not (exit 1)",
		Long: `Show a node's chain, height, peers and whether it commits blocks. It exits
0 when the node commits and has caught up with its peers, and 1 when it
cannot be reached, is still catching up, or has committed nothing for a while
(GET /v1/status answers 503), saying why on stderr. With --quiet it prints
nothing when all is well: a container health check
(["CMD", "/bftmon", "status", "--quiet"]) needs no shell.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout+f.wait)
			defer cancel()
			st, err := c.Status(ctx)
			if err != nil && !errors.Is(err, api.ErrNotReady) {
				return err
			}
			problem := st.Problem
			if problem == "" && st.CatchingUp {
				problem = fmt.Sprintf("catching up: height %d, %d of %d peers connected", st.Height, st.Peers, st.ExpectedPeers)
				if st.PeerHeight > st.Height {
					problem = fmt.Sprintf("catching up: height %d of %d, %d of %d peers connected", st.Height, st.PeerHeight, st.Peers, st.ExpectedPeers)
				}
			}
			if err != nil && problem == "" {
				problem = err.Error()
			}
			if f.output == "json" {
				if err := printJSON(cmd.OutOrStdout(), st); err != nil {
					return err
				}
			} else if !quiet {
				tb := f.table(cmd, "CHAIN", "HEIGHT", "COMMITTING", "CATCHING_UP", "PEERS", "OBSERVER", "DATACENTER", "LAST_COMMIT")
				tb.row(st.ChainID, st.Height, st.Committing, st.CatchingUp, fmt.Sprintf("%d/%d", st.Peers, st.ExpectedPeers),
					orDefaultStr(st.ObserverName, "-"), orDefaultStr(st.Datacenter, "-"), st.LastCommit.Local().Format(time.DateTime))
				if err := tb.flush(); err != nil {
					return err
				}
			}
			if problem != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "node at %s: %s\n", c.Addr(), problem)
				return exitError{1}
			}
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print nothing when the node commits (for health checks)")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "give up on a node that does not answer within this long")
	return cmd
}
