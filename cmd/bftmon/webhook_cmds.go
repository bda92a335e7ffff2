package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/bftmon/bftmon/notify"
)

func newWebhookCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "webhook", Short: "Work with the webhooks bftmon sends"}
	cmd.AddCommand(newWebhookVerifyCmd(), newWebhookReceiveCmd())
	return cmd
}

func newWebhookVerifyCmd() *cobra.Command {
	var secret, id, timestamp, signature string
	var tolerance time.Duration
	var f clientFlags
	var v verifyFlags
	cmd := &cobra.Command{
		Use:   "verify --secret whsec_... --id ID --timestamp TS --signature SIG < body",
		Short: "Check a delivery's Standard Webhooks signature (the body on standard input)",
		Long: `Check that a native delivery is bftmon's: the HMAC-SHA256 in its
webhook-signature header, under the receiver's secret, of
"webhook-id.webhook-timestamp.body", with the timestamp within --tolerance of
now. Exits 0 and prints "valid", or 1 saying what does not match.

The signature proves only that some node sent the body (every node holds the
secret). The body's "record" and "digest" fields also are checked: the JSON
says what the record says and the digest is its SHA-256. With --verify the
record is checked against the committed alert with that id, read from --addr
with proofs against headers the validators signed: a body a faulty node forged
under a real alert id fails. Acknowledge (Bftmon-Ack) only a body that passes;
the acknowledgement signs its digest, and settles nothing for any other body.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if secret == "" || id == "" || timestamp == "" || signature == "" {
				return errors.New("pass --secret, --id, --timestamp and --signature (the webhook-* headers), and the body on standard input")
			}
			body, err := io.ReadAll(cmd.InOrStdin())
			if err != nil {
				return fmt.Errorf("read the body: %w", err)
			}
			if err := notify.Verify(secret, id, timestamp, signature, body, time.Now(), tolerance); err != nil {
				return err
			}
			al, digest, err := notify.CheckBody(body)
			if err != nil {
				return err
			}
			if al.Id != id {
				return fmt.Errorf("the body's record is alert %s, the webhook-id header says %s", al.Id, id)
			}
			if on, err := v.enabled(); err != nil {
				return err
			} else if on {
				c, err := f.client()
				if err != nil {
					return err
				}
				vc, err := v.verifier(cmd.Context(), c)
				if err != nil {
					return err
				}
				if err := notify.CheckCommitted(cmd.Context(), vc, &al); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "valid, committed (digest %x)\n", digest)
				return nil
			}
			fmt.Fprintln(cmd.OutOrStdout(), "valid")
			return nil
		},
	}
	fl0 := cmd.Flags()
	fl0.StringVar(&secret, "secret", "", "the receiver's secret (whsec_...)")
	fl0.StringVar(&id, "id", "", "the webhook-id header (the alert id)")
	fl0.StringVar(&timestamp, "timestamp", "", "the webhook-timestamp header (unix seconds)")
	fl0.StringVar(&signature, "signature", "", "the webhook-signature header")
	fl := cmd.Flags()
	fl.DurationVar(&tolerance, "tolerance", 5*time.Minute, "how far the timestamp may be from now (0: not checked)")
	f.add(cmd)
	v.add(cmd, true)
	return cmd
}
