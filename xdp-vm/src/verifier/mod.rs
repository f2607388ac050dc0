//! The verifier: proves a program safe before any engine runs it. (Being written.)
