package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// nagios4 is Debian's Nagios Core 4 daemon (package nagios4-core, which
// .ci/run installs).
const nagios4 = "/usr/sbin/nagios4"

// docBlocks returns the fenced code blocks of a Markdown file by language.
func docBlocks(t *testing.T, path string) map[string][]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blocks := map[string][]string{}
	var lang string
	var cur []string
	in := false
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		l := sc.Text()
		switch {
		case !in && strings.HasPrefix(l, "```"):
			in, lang, cur = true, strings.TrimPrefix(l, "```"), nil
		case in && l == "```":
			in = false
			blocks[lang] = append(blocks[lang], strings.Join(cur, "\n")+"\n")
		case in:
			cur = append(cur, l)
		}
	}
	return blocks
}

// nagiosFixture is what docs/nagios.md takes for granted on a Nagios
// server: a time period, a contact, generic-service, the host, and the
// check_disk command, here a check_dummy that reports a full disk.
const nagiosFixture = `
define timeperiod {
    timeperiod_name 24x7
    alias           always
    sunday 00:00-24:00
    monday 00:00-24:00
    tuesday 00:00-24:00
    wednesday 00:00-24:00
    thursday 00:00-24:00
    friday 00:00-24:00
    saturday 00:00-24:00
}
define command {
    command_name check_ok
    command_line /usr/lib/nagios/plugins/check_dummy 0 up
}
define command {
    command_name check_disk
    command_line /usr/lib/nagios/plugins/check_dummy 2 "DISK CRITICAL - / is 97% full"
}
define contact {
    contact_name                  nobody
    host_notifications_enabled    0
    service_notifications_enabled 0
    host_notification_period      24x7
    service_notification_period   24x7
    host_notification_options     n
    service_notification_options  n
    host_notification_commands    check_ok
    service_notification_commands check_ok
}
define host {
    host_name           db1
    address             127.0.0.1
    check_command       check_ok
    max_check_attempts  1
    check_period        24x7
    contacts            nobody
    notification_period 24x7
}
define service {
    name                  generic-service
    register              0
    max_check_attempts    1
    check_interval        1
    retry_interval        1
    check_period          24x7
    notification_period   24x7
    notifications_enabled 0
    contacts              nobody
    obsess_over_service   0
}
`

// TestNagiosOCSP runs the Nagios configuration of docs/nagios.md in a real
// Nagios 4 whose ocsp_command calls the real bftmon binary: the Nagios
// check's result becomes the agreed status of the passive bftmon check. The
// ocsp_command reaches the node's observe token only through the documented
// copy (--token-file), made by the documented install command.
func TestNagiosOCSP(t *testing.T) {
	if _, err := os.Stat(nagios4); err != nil {
		t.Fatalf("%s: %v (apt-get install nagios4-core; .ci/run does)", nagios4, err)
	}
	bin := buildBinary(t)
	home := filepath.Join(t.TempDir(), "home")
	httpAddr := freeAddr(t)
	d := startDev(t, bin, "--home", home, "--http", httpAddr, "--demo-addr", freeAddr(t),
		"--rpc", "tcp://"+freeAddr(t), "--p2p", "tcp://"+freeAddr(t))
	d.waitLine(t, "demo is passing", 90*time.Second)
	cli := cliRunner(t, bin, home, httpAddr)

	dir := t.TempDir()
	svc := filepath.Join(dir, "db.yaml")
	os.WriteFile(svc, []byte("name: db\nid: db-1\nchecks:\n  - {id: disk, kind: passive, ttl: 30s}\n"), 0o600)
	if out, code := cli("service", "register", "-f", svc); code != 0 {
		t.Fatalf("register: %q exit %d", out, code)
	}

	// The configuration, from the documentation.
	blocks := docBlocks(t, "../../docs/nagios.md")
	if len(blocks["nagios"]) < 2 || len(blocks["ini"]) != 1 {
		t.Fatalf("docs/nagios.md: want its nagios and ini blocks, found %d and %d", len(blocks["nagios"]), len(blocks["ini"]))
	}
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	group := me.Username
	if g, err := user.LookupGroupId(me.Gid); err == nil {
		group = g.Name
	}
	// The documented paths and user, and the test's.
	const docHome, docToken = "/var/lib/bftmon", "/etc/nagios4/bftmon_observe_token"
	token := filepath.Join(dir, "nagios_observe_token")
	// Nagios' copy of the token, made by the documented command.
	var install string
	for _, b := range blocks["sh"] {
		if strings.HasPrefix(b, "install ") {
			install = strings.TrimSpace(b)
		}
	}
	if !strings.Contains(install, docHome+"/config/observe_token") || !strings.Contains(install, docToken) || !strings.Contains(install, "-o nagios -g nagios -m 0400") {
		t.Fatalf("docs/nagios.md: want a sh block with the install command copying %s/config/observe_token to %s for the nagios user, found %q", docHome, docToken, install)
	}
	install = strings.NewReplacer(docHome, home, docToken, token, "-o nagios -g nagios", "-o "+me.Username+" -g "+group).Replace(install)
	if out, err := exec.Command("/bin/sh", "-c", install).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", install, err, out)
	}
	if fi, err := os.Stat(token); err != nil || fi.Mode().Perm() != 0o400 {
		t.Fatalf("%s made %s: %v, %v", install, token, fi, err)
	}
	objects := strings.Join(blocks["nagios"], "\n")
	if !strings.Contains(objects, "--token-file "+docToken) {
		t.Fatalf("docs/nagios.md: the bftmon-submit command does not pass --token-file %s", docToken)
	}
	objects = strings.ReplaceAll(objects, "/usr/local/bin/bftmon", bin)
	objects = strings.ReplaceAll(objects, "127.0.0.1:8500", httpAddr)
	objects = strings.ReplaceAll(objects, docToken, token)
	os.MkdirAll(filepath.Join(dir, "objects"), 0o755)
	os.MkdirAll(filepath.Join(dir, "checkresults"), 0o755)
	os.WriteFile(filepath.Join(dir, "objects", "fixture.cfg"), []byte(nagiosFixture), 0o644)
	os.WriteFile(filepath.Join(dir, "objects", "bftmon.cfg"), []byte(objects), 0o644)
	main := strings.Join([]string{
		"log_file=" + filepath.Join(dir, "nagios.log"),
		"cfg_dir=" + filepath.Join(dir, "objects"),
		"status_file=" + filepath.Join(dir, "status.dat"),
		"state_retention_file=" + filepath.Join(dir, "retention.dat"),
		"object_cache_file=" + filepath.Join(dir, "objects.cache"),
		"precached_object_file=" + filepath.Join(dir, "objects.precache"),
		"command_file=" + filepath.Join(dir, "nagios.cmd"),
		"lock_file=" + filepath.Join(dir, "nagios.lock"),
		"query_socket=" + filepath.Join(dir, "nagios.qh"),
		"temp_file=" + filepath.Join(dir, "nagios.tmp"),
		"temp_path=" + dir,
		"check_result_path=" + filepath.Join(dir, "checkresults"),
		"nagios_user=" + me.Username,
		"nagios_group=" + group,
		"interval_length=1", // check_interval 1 is one second
		"check_external_commands=0",
		"use_syslog=0",
		blocks["ini"][0],
	}, "\n")
	cfg := filepath.Join(dir, "nagios.cfg")
	os.WriteFile(cfg, []byte(main), 0o644)
	if out, err := exec.Command(nagios4, "-v", cfg).CombinedOutput(); err != nil {
		t.Fatalf("nagios4 -v: %v\n%s", err, out)
	}

	var nlog bytes.Buffer
	ng := exec.Command(nagios4, cfg)
	// The only way to the token is the one documented: no home or
	// variable of this machine's may supply one.
	ng.Env = append(os.Environ(), "BFTMON_HOME="+t.TempDir(), "BFTMON_OBSERVE_TOKEN=")
	ng.Stdout, ng.Stderr = &nlog, &nlog
	if err := ng.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ng.Process.Signal(syscall.SIGTERM)
		ng.Wait()
	}()

	deadline := time.Now().Add(60 * time.Second)
	for {
		out, code := cli("health", "db", "-o", "json")
		if code == 2 && strings.Contains(out, `"status": "critical"`) && strings.Contains(out, "CRITICAL: DISK CRITICAL - / is 97% full") {
			break
		}
		if time.Now().After(deadline) {
			logs, _ := os.ReadFile(filepath.Join(dir, "nagios.log"))
			t.Fatalf("Nagios' result never became the agreed status: %q exit %d\nnagios:\n%s\n%s", out, code, nlog.String(), logs)
		}
		time.Sleep(200 * time.Millisecond) // polling interval
	}
	d.stop(t)
}
