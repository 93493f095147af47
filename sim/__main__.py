"""`python -m sim` (`make sim`): the demo cloud and a simulated case in the terminal."""

from sim.launcher import main

raise SystemExit(main())
