"""stub"""
def add_arguments(p):
    pass
def run(args, argv):
    return 0
