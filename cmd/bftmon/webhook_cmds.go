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
	cmd := &cobra.Command{
		Use:   "verify --secret whsec_... --id ID --timestamp TS --signature SIG < body",
		Short: "Check a delivery's Standard Webhooks signature (the body on standard input)",
		Long: `Check that a native delivery is bftmon's: the HMAC-SHA256 in its
webhook-signature header, under the receiver's secret, of
"webhook-id.webhook-timestamp.body", with the timestamp within --tolerance of
now. Exits 0 and prints "valid", or 1 saying what does not match.`,
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
			fmt.Fprintln(cmd.OutOrStdout(), "valid")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&secret, "secret", "", "the receiver's secret (whsec_...)")
	f.StringVar(&id, "id", "", "the webhook-id header (the alert id)")
	f.StringVar(&timestamp, "timestamp", "", "the webhook-timestamp header (unix seconds)")
	f.StringVar(&signature, "signature", "", "the webhook-signature header")
	f.DurationVar(&tolerance, "tolerance", 5*time.Minute, "how far the timestamp may be from now (0: not checked)")
	return cmd
}
