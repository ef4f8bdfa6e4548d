"""Where the cdr rows come from: the cdr table read in bounded windows (`table`), the walk that
hands out complete leg groups (`walk`), the FreePBX table's schema (`freepbx`), and what a newest
row in the future means (`skew`).

Imports the configuration and the top-level modules; never the ledger, the run or a target."""
