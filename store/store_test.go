package store

import (
	"errors"
	"fmt"
	"testing"

	ics23 "github.com/cosmos/ics23/go"
)

// commitN commits versions up to and including to, one key each.
func commitN(t *testing.T, s *Store, to int64) {
	t.Helper()
	for v := s.Version() + 1; v <= to; v++ {
		if err := s.Set([]byte(fmt.Sprintf("k%04d", v)), []byte("v")); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Commit(); err != nil {
			t.Fatalf("commit %d: %v", v, err)
		}
	}
}

// TestSnapshotExportSurvivesPruning: a version being exported (a snapshot
// written in the background) is not pruned under the export, even with
// keep_versions 1: the commits that would prune it go on, the export reads
// the whole version, and the version is pruned at a later prune once the
// export ended. Without the hold, IAVL refuses to delete a version with an
// active exporter and the Commit that prunes fails, halting the node.
func TestSnapshotExportSurvivesPruning(t *testing.T) {
	s := NewMemory()
	defer s.Close()
	s.SetKeepVersions(1)
	commitN(t, s, 99)
	release, err := s.Hold(99)
	if err != nil {
		t.Fatal(err)
	}
	started, resume := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	var nodes int
	go func() {
		done <- s.Export(99, func(*ExportNode) error {
			if nodes == 0 {
				close(started)
				<-resume
			}
			nodes++
			return nil
		})
	}()
	release() // the export holds the version itself from here on
	<-started
	// Version 100 prunes every version up to 99, the one being exported.
	commitN(t, s, 100)
	if _, err := s.Reader(99); err != nil {
		t.Fatalf("version 99 pruned while being exported: %v", err)
	}
	close(resume)
	if err := <-done; err != nil {
		t.Fatalf("export: %v", err)
	}
	if nodes != 2*99-1 {
		t.Errorf("exported %d nodes, want %d (99 leaves)", nodes, 2*99-1)
	}
	commitN(t, s, 200)
	if _, err := s.Reader(99); !errors.Is(err, ErrNoVersion) {
		t.Errorf("version 99 after the export and a later prune: %v, want %v", err, ErrNoVersion)
	}
	if _, err := s.Reader(199); !errors.Is(err, ErrNoVersion) {
		t.Errorf("version 199 with keep 1 at 200: %v, want %v", err, ErrNoVersion)
	}
}

// TestHoldRefusesAPrunedVersion: a version already pruned cannot be held.
func TestHoldRefusesAPrunedVersion(t *testing.T) {
	s := NewMemory()
	defer s.Close()
	s.SetKeepVersions(1)
	commitN(t, s, 100)
	if _, err := s.Hold(50); !errors.Is(err, ErrNoVersion) {
		t.Errorf("hold of pruned version 50: %v, want %v", err, ErrNoVersion)
	}
}

// TestProof: Proof proves a present key's value and an absent key's
// neighbours against the version's hash, and refuses an empty state.
func TestProof(t *testing.T) {
	s := NewMemory()
	defer s.Close()
	if _, err := (&Reader{}).Proof([]byte("a")); !errors.Is(err, ErrNoVersion) {
		t.Fatalf("proof in an empty state: %v", err)
	}
	for _, k := range []string{"a", "c", "e"} {
		if err := s.Set([]byte(k), []byte("v"+k)); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	r, err := s.Reader(0)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		key         string
		present     bool
		left, right string // the neighbours of an absent key ("": none)
	}{
		{"a", true, "", ""},
		{"e", true, "", ""},
		{"0", false, "", "a"},
		{"b", false, "a", "c"},
		{"c\x00", false, "c", "e"},
		{"f", false, "e", ""},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			p, err := r.Proof([]byte(tt.key))
			if err != nil {
				t.Fatal(err)
			}
			if tt.present {
				if !ics23.VerifyMembership(ics23.IavlSpec, r.Hash(), p, []byte(tt.key), []byte("v"+tt.key)) {
					t.Fatal("existence proof does not verify")
				}
				return
			}
			if !ics23.VerifyNonMembership(ics23.IavlSpec, r.Hash(), p, []byte(tt.key)) {
				t.Fatal("non-existence proof does not verify")
			}
			n := p.GetNonexist()
			if string(n.GetLeft().GetKey()) != tt.left || string(n.GetRight().GetKey()) != tt.right {
				t.Fatalf("neighbours %q %q, want %q %q", n.GetLeft().GetKey(), n.GetRight().GetKey(), tt.left, tt.right)
			}
		})
	}
}

// TestProofEmptyValue: a key holding an empty value (Set turns nil into
// one) cannot be proven, nor a key beside it; Proof says so.
func TestProofEmptyValue(t *testing.T) {
	s := NewMemory()
	defer s.Close()
	if err := s.Set([]byte("a"), nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	r, err := s.Reader(0)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "b"} {
		if _, err := r.Proof([]byte(k)); !errors.Is(err, ErrEmptyValue) {
			t.Fatalf("proof of %q: %v, want ErrEmptyValue", k, err)
		}
	}
}
