#!/usr/bin/env python3
"""Generates a synthetic province for `kyso admin import`: units.csv and accounts.csv.

The default is the size kyso is built for: one province, 10 departments
(Sở, Ban, UBND huyện) of 99 units each — 1,000 units — and 11 accounts per
unit — 11,000 accounts. Each unit has a head and a deputy who sign
(`signer`), two clerks who apply the unit's seal (`clerk`) and seven staff
who sign their own documents; each department also has an archivist and an
admin. The output is deterministic for a given --seed, so a test can
regenerate exactly what it imported.

  deploy/gen-province.py --out DIR                  # the whole province
  deploy/gen-province.py --out DIR --department H37.D01   # one department (about 1,100 accounts)

units.csv:    code,name,parent              (parent "" for the province)
accounts.csv: id,unit,name,roles,cert_sha256,san,issuer
              (roles separated by ';'; the certificate columns are left
              empty: certificates are bound later, when they are issued)
"""
import argparse
import csv
import os
import random
import sys

SURNAMES = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng",
            "Bùi", "Đỗ", "Hồ", "Ngô", "Dương", "Lý"]
MIDDLE = ["Văn", "Thị", "Hữu", "Đức", "Minh", "Thanh", "Quốc", "Ngọc", "Xuân", "Thu"]
GIVEN = ["An", "Bình", "Cường", "Dũng", "Hà", "Hải", "Hạnh", "Hòa", "Hùng", "Hương", "Khánh",
         "Lan", "Linh", "Long", "Mai", "Nam", "Nga", "Phong", "Phương", "Quân", "Quang", "Sơn",
         "Tâm", "Thảo", "Thắng", "Trang", "Trung", "Tuấn", "Vân", "Yến"]
DEPARTMENTS = ["Sở Nội vụ", "Sở Tài chính", "Sở Giáo dục và Đào tạo", "Sở Y tế",
               "Sở Thông tin và Truyền thông", "Sở Tài nguyên và Môi trường",
               "Sở Kế hoạch và Đầu tư", "Ban Quản lý các Khu công nghiệp", "UBND huyện Nam Đàn",
               "UBND huyện Hưng Nguyên"]
UNIT_KINDS = ["Phòng", "Trung tâm", "Chi cục", "Trường", "Bệnh viện", "UBND xã"]
# One unit's staff: (title, roles).
STAFF = [("Trưởng", "signer"), ("Phó", "signer"), ("Văn thư", "clerk"), ("Văn thư", "clerk")] + \
        [("Chuyên viên", "signer")] * 7

ASCII = str.maketrans("àáảãạăằắẳẵặâầấẩẫậèéẻẽẹêềếểễệìíỉĩịòóỏõọôồốổỗộơờớởỡợùúủũụưừứửữựỳýỷỹỵđ",
                      "aaaaaaaaaaaaaaaaaeeeeeeeeeeeiiiiiooooooooooooooooouuuuuuuuuuuyyyyyd")


def ascii_id(name):
    return ".".join(name.lower().translate(ASCII).split())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="directory for units.csv and accounts.csv")
    ap.add_argument("--province", default="H37", help="the province's organ code (H37)")
    ap.add_argument("--departments", type=int, default=10, help="departments (10)")
    ap.add_argument("--units-per-department", type=int, default=99, help="units under each (99)")
    ap.add_argument("--department", help="only this department's subtree, e.g. H37.D01 "
                    "(with the province above it)")
    ap.add_argument("--seed", type=int, default=37, help="random seed (37)")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    units, accounts, taken = [], [], set()

    def person(unit, title, roles):
        name = f"{rng.choice(SURNAMES)} {rng.choice(MIDDLE)} {rng.choice(GIVEN)}"
        base = ascii_id(name)
        n = 1
        while f"{base}.{n:02d}" in taken:
            n += 1
        ident = f"{base}.{n:02d}"
        taken.add(ident)
        accounts.append([ident, unit, f"{name} ({title})", roles, "", "", ""])

    units.append([a.province, "UBND Tỉnh", ""])
    for d in range(1, a.departments + 1):
        dep = f"{a.province}.D{d:02d}"
        keep = a.department is None or a.department == dep
        dep_name = DEPARTMENTS[(d - 1) % len(DEPARTMENTS)]
        if keep:
            units.append([dep, dep_name, a.province])
        # Every department's people are drawn even when not kept, so one
        # department's output is the same as its part of the whole province.
        people = []
        for title, roles in STAFF:
            people.append((dep, f"{title} {dep_name}", roles))
        people.append((dep, "Lưu trữ viên", "archivist"))
        people.append((dep, "Quản trị hệ thống", "admin"))
        for u in range(1, a.units_per_department + 1):
            code = f"{dep}.{u:03d}"
            uname = f"{UNIT_KINDS[u % len(UNIT_KINDS)]} số {u} ({dep_name})"
            if keep:
                units.append([code, uname, dep])
            for title, roles in STAFF:
                people.append((code, f"{title} {uname}", roles))
        for unit, title, roles in people:
            before = len(accounts)
            person(unit, title, roles)
            if not keep:
                accounts.pop()
                assert len(accounts) == before
    if a.department is not None and len(units) == 1:
        sys.exit(f"gen-province: no department {a.department} (H37.D01..H37.D{a.departments:02d})")
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "units.csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["code", "name", "parent"])
        w.writerows(units)
    with open(os.path.join(a.out, "accounts.csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "unit", "name", "roles", "cert_sha256", "san", "issuer"])
        w.writerows(accounts)
    print(f"gen-province: {len(units)} units, {len(accounts)} accounts in {a.out}")


if __name__ == "__main__":
    main()
