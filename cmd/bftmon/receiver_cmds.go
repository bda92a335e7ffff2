package main

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app/types"
)

func newReceiverCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "receiver",
		Short: "Register, list and remove the keys with which webhook receivers acknowledge deliveries",
		Long: `A webhook receiver whose ed25519 public key is registered can acknowledge a
native delivery by answering with the header Bftmon-Ack: its signature over
the chain id, alert id and its name (docs/alerts.md). One acknowledged
receipt settles the alert for that receiver on every node, so it normally
gets one copy instead of two.`,
	}
	cmd.AddCommand(newReceiverRegisterCmd(), newReceiverRemoveCmd(), newReceiverListCmd())
	return cmd
}

func newReceiverRegisterCmd() *cobra.Command {
	var f clientFlags
	var key, pub string
	cmd := &cobra.Command{
		Use:   "register NAME --pub-key BASE64",
		Short: "Register or replace the acknowledgement key of receiver NAME (its name in the nodes' notify settings)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			if pub == "" {
				return errors.New("no key: pass --pub-key with the receiver's base64 ed25519 public key (to remove one, use 'bftmon receiver remove')")
			}
			pk, err := base64.StdEncoding.DecodeString(pub)
			if err != nil || len(pk) != ed25519.PublicKeySize {
				return fmt.Errorf("--pub-key %q: want the base64 of a 32-byte ed25519 public key", pub)
			}
			return sendReceiver(cmd, c, &f, key, args[0], pk)
		},
	}
	f.addWait(cmd, writeWait)
	cmd.Flags().StringVar(&pub, "pub-key", "", "the receiver's ed25519 public key, base64 (32 bytes)")
	cmd.Flags().StringVar(&key, "key", "", "operator key file (env BFTMON_KEY; default $BFTMON_HOME/config/operator_key.json)")
	return cmd
}

func newReceiverRemoveCmd() *cobra.Command {
	var f clientFlags
	var key string
	cmd := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove the acknowledgement key of receiver NAME",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			return sendReceiver(cmd, c, &f, key, args[0], nil)
		},
	}
	f.addWait(cmd, writeWait)
	cmd.Flags().StringVar(&key, "key", "", "operator key file (env BFTMON_KEY)")
	return cmd
}

// sendReceiver signs a receiver key registration (pub nil: removal) with
// the operator key and sends it.
func sendReceiver(cmd *cobra.Command, c *api.Client, f *clientFlags, keyFlag, name string, pub ed25519.PublicKey) error {
	k, err := loadOperatorKey(keyFlag)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), f.sendTimeout())
	defer cancel()
	res, err := c.RegisterReceiver(ctx, k.Private, name, pub)
	if err != nil {
		return err
	}
	if f.output == "json" {
		return printJSON(cmd.OutOrStdout(), res)
	}
	if pub == nil {
		fmt.Fprintf(cmd.OutOrStdout(), "removed the key of receiver %s at height %d\n", name, res.Height)
	} else {
		fmt.Fprintf(cmd.OutOrStdout(), "registered key %s for receiver %s at height %d\n", types.KeyID(pub), name, res.Height)
	}
	return nil
}

func newReceiverListCmd() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the receivers with registered acknowledgement keys",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			list, _, err := c.Receivers(cmd.Context(), nil)
			if err != nil {
				return err
			}
			if f.output == "json" {
				return printJSON(cmd.OutOrStdout(), list)
			}
			tb := f.table(cmd, "NAME", "PUB_KEY", "REGISTERED_BY", "HEIGHT")
			for _, r := range list {
				tb.row(r.Name, r.PubKey, r.Operator, r.Height)
			}
			return tb.flush()
		},
	}
	f.add(cmd)
	return cmd
}
