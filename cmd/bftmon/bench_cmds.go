package main

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bftmon/bftmon/bench"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure this machine: an observer under many checks, a node's committed observations per second, read throughput",
		Long: `Benchmarks that print their figures (docs/BENCHMARKS.md). The checks probe
local HTTP and TCP servers that run in a child process, so that their CPU is
not counted.`,
	}
	var checks, concurrent int
	var interval, duration, block time.Duration
	withTargets := func(run func(ctx context.Context, t *bench.Targets) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, _ []string) error {
			self, err := os.Executable()
			if err != nil {
				return err
			}
			t, err := bench.StartTargets(cmd.Context(), self, "bench", "serve-targets")
			if err != nil {
				return err
			}
			defer t.Close()
			return run(cmd.Context(), t)
		}
	}
	observer := &cobra.Command{
		Use:   "observer",
		Short: "One observer's scheduler with many checks: lateness, CPU, memory",
		Args:  cobra.NoArgs,
		RunE: withTargets(func(ctx context.Context, t *bench.Targets) error {
			return bench.Observer(ctx, os.Stdout, t, bench.ObserverConfig{Checks: checks, Interval: interval, Duration: duration, MaxConcurrent: concurrent})
		}),
	}
	nodeCmd := &cobra.Command{
		Use:   "node",
		Short: "A one-node network observing many checks: committed observations per second",
		Args:  cobra.NoArgs,
		RunE: withTargets(func(ctx context.Context, t *bench.Targets) error {
			return bench.Node(ctx, os.Stdout, t, bench.NodeConfig{Checks: checks, Interval: interval, Duration: duration, BlockInterval: block})
		}),
	}
	for _, c := range []*cobra.Command{observer, nodeCmd} {
		c.Flags().IntVar(&checks, "checks", 10000, "number of checks (half http, half tcp)")
		c.Flags().DurationVar(&interval, "interval", 10*time.Second, "check interval")
		c.Flags().DurationVar(&duration, "duration", time.Minute, "how long to measure, after one interval of warm-up")
	}
	observer.Flags().IntVar(&concurrent, "max-concurrent", 64, "probes in flight at most (the node setting max_concurrent_probes)")
	nodeCmd.Flags().DurationVar(&block, "block-interval", 0, "if set, a steady block every this long (consensus timeout_commit); default: bftmon init's lan profile")
	var instances, conns int
	var readDuration time.Duration // its own: sharing duration let read's default overwrite observer's and node's
	read := &cobra.Command{
		Use:   "read",
		Short: "A one-node network with many instances: HTTP (with wrk) and DNS read throughput and latency",
		Args:  cobra.NoArgs,
		RunE: withTargets(func(ctx context.Context, t *bench.Targets) error {
			return bench.Read(ctx, os.Stdout, t, bench.ReadConfig{Instances: instances, Connections: conns, Duration: readDuration})
		}),
	}
	read.Flags().IntVar(&instances, "instances", 100, "instances of the service web")
	read.Flags().IntVar(&conns, "connections", 16, "concurrent HTTP connections (wrk -c) and DNS clients")
	read.Flags().DurationVar(&readDuration, "duration", 15*time.Second, "how long to load each query")
	var reads int
	var verifyDuration time.Duration
	verifyCmd := &cobra.Command{
		Use:   "verify",
		Short: "What verified reads cost: latency with and without verification, proof sizes, the verifying proxy's throughput beside the node's",
		Args:  cobra.NoArgs,
		RunE: withTargets(func(ctx context.Context, t *bench.Targets) error {
			return bench.Verify(ctx, os.Stdout, t, bench.VerifyConfig{Instances: instances, Reads: reads, Connections: conns, Duration: verifyDuration})
		}),
	}
	verifyCmd.Flags().IntVar(&instances, "instances", 100, "instances of the service web")
	verifyCmd.Flags().IntVar(&reads, "reads", 300, "sequential reads of /v1/services/web measured each way")
	verifyCmd.Flags().IntVar(&conns, "connections", 16, "concurrent HTTP connections (wrk -c)")
	verifyCmd.Flags().DurationVar(&verifyDuration, "duration", 15*time.Second, "how long to load each query with wrk (0: no wrk runs)")
	var kvClients []int
	var kvBatch int
	var kvDuration time.Duration
	var kvSystems []string
	var etcdBin string
	kvCmd := &cobra.Command{
		Use:   "kv",
		Short: "Key/value throughput beside etcd: committed puts/s (single and in txns) and reads/s on bftmon's one-node and 4-node networks, etcd alone and 3 etcd members",
		Long: `Starts on loopback, one after the other and in temporary directories: a
one-node bftmon network with bftmon dev's settings (blocks every 500 ms), a
4-node bftmon testnet (four processes), etcd alone and a 3-member etcd
cluster (Debian's etcd-server, its default settings). For each client
concurrency it measures, for --duration each: single puts committed per
second (bftmon: a signed KV set on POST /v1/txs, which answers once it is
committed; etcd: POST /v3/kv/put on its JSON gateway), puts committed per
second in transactions of --batch sets (bftmon txn, etcd txn), and reads per
second (bftmon: GET /v1/kv/KEY of the agreed state; etcd: a linearizable
range). Clients spread over the nodes and members. Every process it starts
is killed at the end (docs/BENCHMARKS.md).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			self, err := os.Executable()
			if err != nil {
				return err
			}
			if etcdBin == "" {
				etcdBin, _ = exec.LookPath("etcd")
			}
			return bench.KV(cmd.Context(), os.Stdout, bench.KVConfig{Self: self, Etcd: etcdBin, Clients: kvClients, Batch: kvBatch, Duration: kvDuration, Systems: kvSystems})
		},
	}
	kvCmd.Flags().IntSliceVar(&kvClients, "clients", []int{1, 16}, "client concurrencies to measure")
	kvCmd.Flags().IntVar(&kvBatch, "batch", 16, "sets per batched transaction (1..64)")
	kvCmd.Flags().DurationVar(&kvDuration, "duration", 10*time.Second, "how long to measure each workload at each concurrency")
	kvCmd.Flags().StringSliceVar(&kvSystems, "systems", nil, "systems to run (default all: "+strings.Join(bench.KVSystems, ",")+")")
	kvCmd.Flags().StringVar(&etcdBin, "etcd", "", "the etcd binary (default: etcd on PATH)")
	serve := &cobra.Command{
		Use:    "serve-targets",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE:   func(cmd *cobra.Command, _ []string) error { return bench.ServeTargets(cmd.Context(), os.Stdout) },
	}
	var scaleNodes, scaleChecks []int
	var scaleInterval, scaleDuration time.Duration
	scaleCmd := &cobra.Command{
		Use:   "scale",
		Short: "Committed observations on 1- and 4-node networks at many checks, fed by a load generator that signs and batches as the observers do",
		Long: `Starts, for each network size and check count, a bftmon testnet (each node
its own process, in a temporary directory), registers that many passive
checks, and feeds every node's mempool with its own observer's signed
batches: every second, the checks due in that second, each check once per
--interval, at most 5,000 observations a batch, exactly as a node's observer
submits them. Probing is left out: four observers' probes on two cores
measure the machine (bench observer measures probing). After one interval of
warm-up it measures for --duration: observations asked and committed per
second, CPU-seconds of all nodes per 1,000 committed observations, the
largest node's RSS, bytes per block, the block interval, and how many checks
are not passing at the end (stale: their reports did not commit in time).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			self, err := os.Executable()
			if err != nil {
				return err
			}
			return bench.Scale(cmd.Context(), os.Stdout, bench.ScaleConfig{Self: self, Nodes: scaleNodes, Checks: scaleChecks, Interval: scaleInterval, Duration: scaleDuration})
		},
	}
	scaleCmd.Flags().IntSliceVar(&scaleNodes, "nodes", []int{1, 4}, "network sizes to measure")
	scaleCmd.Flags().IntSliceVar(&scaleChecks, "checks", []int{1000, 10000}, "check counts to measure on each network")
	scaleCmd.Flags().DurationVar(&scaleInterval, "interval", 10*time.Second, "how often every observer reports each check")
	scaleCmd.Flags().DurationVar(&scaleDuration, "duration", 30*time.Second, "how long to measure each network")
	cmd.AddCommand(observer, nodeCmd, read, verifyCmd, kvCmd, scaleCmd, serve)
	return cmd
}
