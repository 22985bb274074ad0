"""python -m mirasol_edge"""

from mirasol_edge.cli import main

main()
