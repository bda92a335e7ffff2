// Command bftmon is the one binary of bftmon: it runs nodes (dev, init,
// start, testnet), talks to them (status, service, services, health, observers, alerts, receiver, webhook,
// version, kv, session), runs or submits check results as an observer (check run, submit), and stands in for the
// services of a local cluster (demo-target, webhook receive).
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "bftmon",
		Short:         "Byzantine-fault-tolerant monitoring and service discovery",
		Long:          "bftmon decides the health of services by quorum of independent observers, agreed through CometBFT.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		// Node commands (node_cmds.go; join in join_cmd.go).
		newDevCmd(), newInitCmd(), newJoinCmd(), newStartCmd(), newTestnetCmd(),
		// Client commands (client_cmds.go).
		newStatusCmd(), newServiceCmd(), newServicesCmd(), newHealthCmd(), newObserversCmd(), newAlertsCmd(), newWebhookCmd(), newReceiverCmd(), newVersionCmd(),
		// Observer commands (check_cmds.go).
		newCheckCmd(), newSubmitCmd(),
		// Stand-ins for a local cluster's services (demo_cmds.go).
		newDemoTargetCmd(),
		// The key/value store and sessions (kv_cmds.go).
		newKVCmd(), newSessionCmd(),
		// The verifying proxy (verify_cmds.go).
		newProxyCmd(),
		// Leader election (lock_cmds.go).
		newLockCmd(),
		// Benchmarks (bench_cmds.go).
		newBenchCmd(),
	)
	return root
}
