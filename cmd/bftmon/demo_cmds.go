package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/bftmon/bftmon/notify"
)

// newDemoTargetCmd is 'bftmon demo-target': a service to monitor that can be
// broken and healed on request, for local clusters (docker-compose.yml).
func newDemoTargetCmd() *cobra.Command {
	var listen, name, level string
	var failing bool
	cmd := &cobra.Command{
		Use:   "demo-target --listen ADDR",
		Short: "Serve a health endpoint that can be made unhealthy and healthy on request (a demo service to monitor)",
		Long: `Serve GET /health: 200 "ok" while healthy, 503 while failing. Make it fail
with POST /fail or SIGUSR1 (docker kill -s USR1 CONTAINER), heal it with
POST /heal or SIGUSR2. GET /ping always answers 200 (for the container's own
health check: the process serves), GET / says the state. Every change is
logged on stderr. Runs until SIGINT or SIGTERM.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(level)
			if err != nil {
				return err
			}
			if name == "" {
				name, _ = os.Hostname()
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			t := &demoTarget{name: name, log: logger}
			t.failing.Store(failing)
			sigs := make(chan os.Signal, 4)
			signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2)
			defer signal.Stop(sigs)
			go func() {
				for {
					select {
					case <-ctx.Done():
						return
					case s := <-sigs:
						t.set(s == syscall.SIGUSR1, "signal "+s.String())
					}
				}
			}()
			return serveUntil(ctx, listen, t.handler(), logger, "demo target "+name)
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:8080", "listen address")
	f.StringVar(&name, "name", "", "name in answers and logs (default: the host name)")
	f.BoolVar(&failing, "fail", false, "start failing")
	f.StringVar(&level, "log-level", "info", "log level: debug, info, warn, error")
	return cmd
}

// demoTarget is the state of a demo target: healthy or failing.
type demoTarget struct {
	name    string
	failing atomic.Bool
	log     *slog.Logger
}

// set makes the target fail (or heal), logging the change and its cause.
func (t *demoTarget) set(fail bool, cause string) {
	if t.failing.Swap(fail) == fail {
		t.log.Info("demo target unchanged", "target", t.name, "failing", fail, "by", cause)
		return
	}
	if fail {
		t.log.Warn("demo target now FAILING its health check", "target", t.name, "by", cause)
	} else {
		t.log.Info("demo target now healthy", "target", t.name, "by", cause)
	}
}

func (t *demoTarget) state() string {
	if t.failing.Load() {
		return "failing"
	}
	return "healthy"
}

func (t *demoTarget) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		if t.failing.Load() {
			http.Error(w, t.name+" is failing (POST /heal or SIGUSR2 heals it)", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok", t.name)
	})
	mux.HandleFunc("GET /ping", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "pong") })
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, t.name, t.state()) })
	mux.HandleFunc("POST /fail", func(w http.ResponseWriter, r *http.Request) {
		t.set(true, "POST /fail from "+r.RemoteAddr)
		fmt.Fprintln(w, t.name, "is now failing its health check")
	})
	mux.HandleFunc("POST /heal", func(w http.ResponseWriter, r *http.Request) {
		t.set(false, "POST /heal from "+r.RemoteAddr)
		fmt.Fprintln(w, t.name, "is healthy again")
	})
	return mux
}

// serveUntil serves h on addr until ctx ends, then shuts the server down.
func serveUntil(ctx context.Context, addr string, h http.Handler, log *slog.Logger, what string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: listen on %s: %w (choose another with --listen)", what, addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info(what+" listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("%s: %w", what, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("%s: shut down: %w", what, err)
	}
	return nil
}

// newWebhookReceiveCmd is 'bftmon webhook receive': a receiver that checks
// and prints every delivery, for local clusters and trying receivers out.
func newWebhookReceiveCmd() *cobra.Command {
	var listen, secret, secretFile, level string
	var tolerance time.Duration
	cmd := &cobra.Command{
		Use:   "receive --listen ADDR [--secret whsec_... | --secret-file FILE]",
		Short: "Receive native webhook deliveries, verify their signatures, and print one line per alert",
		Long: `Receive bftmon's native deliveries (POST, any path), verify each one's
Standard Webhooks signature under the receiver's secret (a delivery that does
not verify is answered 401 and logged), and print one line per delivery on
standard output:

  RECEIVED  ALERT-ID  KIND  SERVICE/INSTANCE/CHECK  FROM -> TO  height H  copy N

Copies of one alert (several nodes deliver it) are counted by webhook-id.
GET /alerts answers the alerts received so far as JSON (id, kind, subject,
from, to, height, copies, first received), for scripts and tests; GET /ping
answers 200. Without a secret, signatures are not checked.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(level)
			if err != nil {
				return err
			}
			if secretFile != "" {
				if secret != "" {
					return errors.New("pass --secret or --secret-file, not both")
				}
				b, err := os.ReadFile(secretFile)
				if err != nil {
					return fmt.Errorf("read the webhook secret: %w (bftmon testnet --webhook writes it)", err)
				}
				secret = strings.TrimSpace(string(b))
			}
			if secret != "" {
				// A secret that signs nothing would reject every delivery.
				if _, err := notify.ParseSecret(secret); err != nil {
					return fmt.Errorf("--secret: %w", err)
				}
			} else {
				logger.Warn("no --secret: deliveries are printed without checking their signatures")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rc := &webhookReceiver{secret: secret, tolerance: tolerance, out: cmd.OutOrStdout(), log: logger, byID: map[string]*receivedAlert{}}
			return serveUntil(ctx, listen, rc.handler(), logger, "webhook receiver")
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:9000", "listen address")
	f.StringVar(&secret, "secret", "", "the receiver's secret (whsec_...), as in the nodes' notify settings")
	f.StringVar(&secretFile, "secret-file", "", "read the secret from this file")
	f.DurationVar(&tolerance, "tolerance", 5*time.Minute, "how far a delivery's timestamp may be from now")
	f.StringVar(&level, "log-level", "info", "log level: debug, info, warn, error")
	return cmd
}

// receivedAlert is an alert a webhook receiver got, with its copies.
type receivedAlert struct {
	ID            string    `json:"id"`
	Kind          string    `json:"kind"`
	Subject       string    `json:"subject"`
	From          string    `json:"from"`
	To            string    `json:"to"`
	Height        int64     `json:"height"`
	Copies        int       `json:"copies"`
	FirstReceived time.Time `json:"first_received"`
}

// webhookReceiver verifies and records deliveries.
type webhookReceiver struct {
	secret    string
	tolerance time.Duration
	out       io.Writer
	log       *slog.Logger

	mu    sync.Mutex
	order []*receivedAlert
	byID  map[string]*receivedAlert
}

func (rc *webhookReceiver) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ping", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "pong") })
	mux.HandleFunc("GET /alerts", func(w http.ResponseWriter, _ *http.Request) {
		rc.mu.Lock()
		list := make([]receivedAlert, 0, len(rc.order))
		for _, a := range rc.order {
			list = append(list, *a)
		}
		rc.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(list)
	})
	mux.HandleFunc("POST /", rc.receive)
	return mux
}

func (rc *webhookReceiver) receive(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil {
		http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
		return
	}
	id, ts, sig := r.Header.Get(notify.HeaderID), r.Header.Get(notify.HeaderTimestamp), r.Header.Get(notify.HeaderSignature)
	if rc.secret != "" {
		if err := notify.Verify(rc.secret, id, ts, sig, body, time.Now(), rc.tolerance); err != nil {
			rc.log.Warn("delivery refused: its signature does not verify", "from", r.RemoteAddr, "webhook_id", id, "err", err)
			http.Error(w, "signature: "+err.Error(), http.StatusUnauthorized)
			return
		}
	}
	var p notify.Payload
	if err := json.Unmarshal(body, &p); err != nil || p.ID == "" {
		rc.log.Warn("delivery refused: not a bftmon alert", "from", r.RemoteAddr, "err", err)
		http.Error(w, "want a bftmon native alert (JSON with an id)", http.StatusBadRequest)
		return
	}
	subject := p.Service + "/" + p.Instance + "/" + p.Check
	if p.Observer != "" {
		subject = "observer " + p.Observer
	}
	now := time.Now().UTC()
	rc.mu.Lock()
	a := rc.byID[p.ID]
	if a == nil {
		a = &receivedAlert{ID: p.ID, Kind: p.Kind, Subject: subject, From: p.From, To: p.To, Height: p.Height, FirstReceived: now}
		rc.byID[p.ID] = a
		rc.order = append(rc.order, a)
	}
	a.Copies++
	copies := a.Copies
	rc.mu.Unlock()
	verified := "unsigned"
	if rc.secret != "" {
		verified = "verified"
	}
	fmt.Fprintf(rc.out, "%s  %s  %s  %s  %s -> %s  height %d  copy %d  %s\n",
		now.Format(time.RFC3339), p.ID, p.Kind, subject, p.From, p.To, p.Height, copies, verified)
	w.WriteHeader(http.StatusNoContent)
}
