"""Who may do what: the contract (`contract`), the operations probed as each persona
(`probes`) in a rolled-back world of test data (`worlds`), the measured matrix (`matrix`),
`dbtool verify` (`verify`), and the planner facts the probes rely on (`estimates`, `plans`)."""
