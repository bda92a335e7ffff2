package server

// Waiting is the number of topics blocking queries wait on.
func (s *Server) Waiting() int { return s.hub.waiting() }

// BodyReadsPeak is the most request bodies ever read at once.
func (s *Server) BodyReadsPeak() int { return int(s.bodies.peak.Load()) }
