"""The node: it wires the core's state machines to the network, the sandbox and the data dir.

    mesh_node.py    lifecycle (open_node, MeshNode), presence and the peer table
    owning.py       the jobs this node owns, driving each owner state machine
    stealing.py     taking replicas from other owners, driving the thief state machine
    executing.py    running replicas in the sandbox, with a result cache
    job_service.py  the owner's side of the job protocol
    job_summary.py  a job's state and progress, as the API shows it
"""
