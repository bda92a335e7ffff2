package app

import (
	"errors"

	"github.com/bftmon/bftmon/app/types"
)

// ErrNotFound is returned by reads for names that are not registered.
var ErrNotFound = errors.New("not found")

// ObserverReport is one observer's latest report on a check, as of the
// committed height of the read.
type ObserverReport struct {
	Observer types.Observer
	// Record is nil if the observer has never reported on the check.
	Record *types.ObservationRecord
	// AsOfMs is when Record counts as observed: its own time, or a later
	// vouch of the observer that covers it (ObserverStamp).
	AsOfMs int64
	// Fresh tells whether Record is within the check's ttl at the block time.
	Fresh bool
}

// CheckView is a check with its agreed state and its observers' reports.
type CheckView struct {
	Check types.Check
	State types.CheckState
	// Reports lists every observer in the check's scope, by observer id.
	Reports []ObserverReport
}

// InstanceView is a service instance with its checks.
type InstanceView struct {
	Instance types.ServiceInstance
	// Status is the worst hard status of its checks (STATUS_NONE: pending).
	Status types.Status
	Checks []CheckView
}

// ServiceSummary is one line of the service list.
type ServiceSummary struct {
	Name      string
	Instances int
	// Status is the worst hard status of its instances.
	Status types.Status
	// Tags is the union of its instances' tags, sorted.
	Tags []string
}

// Info is what the committed state says about itself.
type Info struct {
	ChainID   string
	Height    int64
	AppHash   []byte
	BlockTime int64 // unix ms of the last committed block
}
