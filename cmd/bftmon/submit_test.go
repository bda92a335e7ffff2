package main

import "testing"

// TestNagiosCode: service codes and names, and host state names as an
// ochp_command passes them ($HOSTSTATE$): DOWN is critical, not warning.
func TestNagiosCode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		ok   bool
	}{
		{"0", 0, true}, {"2", 2, true}, {"3", 3, true}, {"4", 0, false}, {"-1", 0, false},
		{"ok", 0, true}, {"OK", 0, true}, {"warning", 1, true}, {"critical", 2, true}, {"unknown", 3, true}, {"passing", 0, true},
		{"UP", 0, true}, {"DOWN", 2, true}, {"UNREACHABLE", 3, true}, {"down", 2, true},
		{"stale", 0, false}, {"sideways", 0, false},
	} {
		got, err := nagiosCode(tc.in)
		if (err == nil) != tc.ok || tc.ok && got != tc.want {
			t.Errorf("nagiosCode(%q) = %d, %v; want %d (ok %v)", tc.in, got, err, tc.want, tc.ok)
		}
	}
}
