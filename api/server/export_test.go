package server

// Waiting is the number of topics blocking queries wait on.
func (s *Server) Waiting() int { return s.hub.waiting() }
