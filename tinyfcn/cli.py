"""The ``tinyfcn`` command line."""
import argparse
import sys


def cmd_gradcheck(args):
    from .checks import TOLERANCE, format_table, table
    rows = table()
    print(format_table(rows))
    print(f"\nfloat64, centred differences with h = 1e-5; tolerance {TOLERANCE:.0e}")
    return 0 if all(worst < TOLERANCE for _, _, worst in rows) else 1


def build_parser():
    parser = argparse.ArgumentParser(prog="tinyfcn", description="Fully Convolutional Networks from scratch in NumPy.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("gradcheck", help="check every backward pass against finite differences and print the table")
    p.set_defaults(run=cmd_gradcheck)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
