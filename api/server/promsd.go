package server

import (
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/bftmon/bftmon/app"
)

// promTargetGroup is one entry of Prometheus' HTTP service discovery
// format.
type promTargetGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// promSD answers Prometheus' http_sd_configs: every instance (or those of
// ?service=, kept by the native filters) as a target group of its own, with
// __meta_bftmon_* labels for relabelling: service, instance, datacenter,
// status (agreed hard status), verdict, tags (comma-enclosed, as Consul's
// discovery gives them) and meta_KEY for each meta pair.
func (s *Server) promSD(w http.ResponseWriter, r *http.Request) {
	var names []string
	var f app.Filter
	b, ok := parse(w, r, false, func(p *params) {
		names = p.list("service")
		f = p.filter(false)
	})
	if !ok {
		return
	}
	topic := topicState
	if len(names) == 1 {
		topic = serviceTopic(names[0])
	}
	s.read(w, r, topic, b, func(q *app.Query) (int64, any, error) {
		index := q.Indexes().State
		if len(names) == 0 {
			list, err := q.Services()
			if err != nil {
				return 0, nil, err
			}
			for _, x := range list {
				names = append(names, x.Name)
			}
		} else if len(names) == 1 {
			var err error
			if index, err = q.ServiceIndex(names[0]); err != nil {
				return 0, nil, err
			}
		}
		out := []promTargetGroup{}
		for _, name := range names {
			insts, err := q.Find(name, f)
			if errors.Is(err, app.ErrNotFound) {
				continue
			}
			if err != nil {
				return 0, nil, err
			}
			for i := range insts {
				// An instance without an address and port is no target
				// (Prometheus would try ":0").
				if si := &insts[i].Instance; si.Address == "" || si.Port == 0 {
					continue
				}
				out = append(out, promGroup(&insts[i]))
			}
		}
		return index, out, nil
	}, bftmonIndex)
}

func promGroup(iv *app.InstanceView) promTargetGroup {
	si := &iv.Instance
	l := map[string]string{
		"__meta_bftmon_service":    si.Name,
		"__meta_bftmon_instance":   si.Id,
		"__meta_bftmon_datacenter": si.Datacenter,
		"__meta_bftmon_status":     iv.Status.Name(),
		"__meta_bftmon_verdict":    iv.Verdict().Name(),
		"__meta_bftmon_tags":       "," + strings.Join(si.Tags, ",") + ",",
		"__meta_bftmon_address":    si.Address,
		"__meta_bftmon_port":       strconv.Itoa(int(si.Port)),
	}
	for _, p := range si.Meta {
		l["__meta_bftmon_meta_"+sanitizeLabel(p.Key)] = p.Value
	}
	return promTargetGroup{Targets: []string{net.JoinHostPort(si.Address, strconv.Itoa(int(si.Port)))}, Labels: l}
}

// sanitizeLabel makes s a valid Prometheus label name part.
func sanitizeLabel(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	return string(b)
}
