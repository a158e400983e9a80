"""Synthetic channel exports, in each platform's own columns, and the import benchmark.

``write_export`` writes N orders as the platform's back office would export them (Shopify's
orders CSV, Taobao's GBK 订单报表, JD's export as XLSX or CSV, PDD's export, Amazon's tab-separated
All Orders report), so tests and the benchmark read the same shapes merchants download. Order k is
the same order in every file with the same seed; ``status="shipped"`` writes its later state
(shipped / fulfilled a day later), which the re-delivery rule treats as an update.

The benchmark (``python -m bench.exports``) times reading, mapping and admitting a 100,000-row
Shopify export into a real ingest journal (fsynced commits), as the service does, and reports
rows/s and the peak resident memory, which must not grow with the file.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import resource
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SKUS = ["MB-C200", "HD-001-BK-M", "HD-001-BK-L", "T-001-WH-S", "CUP-01", "BAG-02", "PEN-10"]
SHOPIFY = [
    "Name", "Email", "Financial Status", "Paid at", "Fulfillment Status", "Fulfilled at",
    "Accepts Marketing", "Currency", "Subtotal", "Shipping", "Taxes", "Total", "Discount Code",
    "Discount Amount", "Shipping Method", "Created at", "Lineitem quantity", "Lineitem name",
    "Lineitem price", "Lineitem compare at price", "Lineitem sku", "Lineitem requires shipping",
    "Lineitem taxable", "Lineitem fulfillment status", "Billing Name", "Billing Street",
    "Billing Address1", "Billing Address2", "Billing Company", "Billing City", "Billing Zip",
    "Billing Province", "Billing Country", "Billing Phone", "Shipping Name", "Shipping Street",
    "Shipping Address1", "Shipping Address2", "Shipping Company", "Shipping City",
    "Shipping Zip", "Shipping Province", "Shipping Country", "Shipping Phone", "Notes",
    "Note Attributes", "Cancelled at", "Payment Method", "Payment Reference", "Refunded Amount",
    "Vendor", "Outstanding Balance", "Employee", "Location", "Device ID", "Id", "Tags",
    "Risk Level", "Source", "Lineitem discount", "Phone",
]  # fmt: skip
TAOBAO = [
    "订单编号", "买家会员名", "买家应付货款", "买家应付邮费", "总金额", "买家实际支付金额",
    "订单状态", "买家留言", "收货人姓名", "收货地址", "运送方式", "联系电话", "联系手机",
    "订单创建时间", "订单付款时间", "宝贝标题", "宝贝种类", "物流单号", "物流公司", "订单备注",
    "宝贝总数量", "店铺名称", "退款金额", "确认收货时间", "发货时间", "商家编码",
]  # fmt: skip
JD = [
    "订单号", "商品ID", "商品名称", "订购数量", "支付方式", "下单时间", "京东价", "订单金额",
    "结算金额", "应付金额", "订单状态", "订单类型", "客户姓名", "客户地址", "联系电话", "订单备注",
    "运费金额", "付款确认时间", "订单完成时间", "商家SKUID",
]  # fmt: skip
PDD = [
    "商品", "订单号", "订单状态", "商品总价(元)", "店铺优惠折扣(元)", "平台优惠折扣(元)",
    "邮费(元)", "用户实付金额(元)", "商家实收金额(元)", "商品数量(件)", "收货人", "手机", "省",
    "市", "区", "街道", "拼单成功时间", "订单确认时间", "发货时间", "确认收货时间", "商品id",
    "样式ID", "商家编码-SKU维度", "售后状态",
]  # fmt: skip
AMAZON = [
    "amazon-order-id", "merchant-order-id", "purchase-date", "last-updated-date",
    "order-status", "fulfillment-channel", "sales-channel", "product-name", "sku", "asin",
    "item-status", "quantity", "currency", "item-price", "item-tax", "shipping-price",
    "shipping-tax", "item-promotion-discount", "ship-promotion-discount", "ship-city",
    "ship-state", "ship-postal-code", "ship-country", "is-business-order",
]  # fmt: skip
HEADERS = {"shopify": SHOPIFY, "taobao": TAOBAO, "jd": JD, "pdd": PDD, "amazon": AMAZON}
CITIES = [
    ("浙江省", "杭州市", "西湖区"),
    ("江苏省", "南京市", "鼓楼区"),
    ("广东省", "深圳市", "南山区"),
]
SURNAMES = "王李张刘陈杨黄赵吴周"


@dataclass
class Synthetic:
    k: int
    lines: list[tuple[str, int, int]]  # sku, quantity, unit price in minor units
    day: int
    minute: int
    name: str
    phone: str

    @property
    def goods(self) -> int:
        return sum(q * p for _, q, p in self.lines)


def synthetic(k: int, seed: int) -> Synthetic:
    rnd = random.Random(seed * 1_000_003 + k)
    n = 1 if rnd.random() < 0.6 else rnd.randint(2, 3)
    skus = rnd.sample(SKUS, n)
    lines = [(s, rnd.randint(1, 3), rnd.randint(5, 300) * 100 + 99) for s in skus]
    name = SURNAMES[rnd.randrange(10)] + "*"
    return Synthetic(
        k, lines, 1 + k % 28, (k * 7) % 1440, name, f"13{rnd.randint(100000000, 999999999)}"
    )


def _money(minor: int) -> str:
    return f"{minor // 100}.{minor % 100:02d}"


def _local(o: Synthetic, later_min: int = 0) -> str:
    m = o.minute + later_min
    return f"2026-11-{o.day + m // 1440:02d} {(m % 1440) // 60:02d}:{m % 60:02d}:00"


def _rows(channel: str, o: Synthetic, shipped: bool) -> Iterator[dict[str, str]]:
    goods = _money(o.goods)
    created, paid, sent = _local(o), _local(o, 1), _local(o, 1440)
    prov, city, dist = CITIES[o.k % 3]
    if channel == "shopify":
        oid = str(6_100_000_000_000 + o.k)
        for i, (sku, q, p) in enumerate(o.lines):
            row = {
                "Name": f"#{10_000 + o.k}",
                "Id": oid,
                "Created at": created.replace("2026", "2026", 1) + " +0800",
                "Lineitem quantity": str(q),
                "Lineitem name": f"Item {sku}",
                "Lineitem price": _money(p),
                "Lineitem sku": sku,
                "Lineitem discount": "0.00",
            }
            if i == 0:
                row.update(
                    {
                        "Email": f"buyer{o.k}@example.com",
                        "Financial Status": "paid",
                        "Paid at": paid + " +0800",
                        "Fulfillment Status": "fulfilled" if shipped else "unfulfilled",
                        "Fulfilled at": (sent + " +0800") if shipped else "",
                        "Currency": "USD",
                        "Subtotal": goods,
                        "Shipping": "0.00",
                        "Taxes": "0.00",
                        "Total": goods,
                        "Discount Amount": "0.00",
                        "Shipping Name": f"Buyer {o.k}",
                        "Shipping Address1": f"{o.k} Market St",
                        "Shipping City": "San Francisco",
                        "Shipping Zip": "94103",
                        "Shipping Province": "CA",
                        "Shipping Country": "US",
                        "Shipping Phone": f"+1 415-555-{o.k % 10000:04d}",
                        "Outstanding Balance": "0.00",
                    }
                )
            yield row
    elif channel == "taobao":
        sku, q, _ = o.lines[0]  # the classic report: one row per trade
        yield {
            "订单编号": f'="{4_100_000_000_000_000_000 + o.k}"',
            "买家应付货款": goods,
            "买家应付邮费": "0.00",
            "总金额": goods,
            "买家实际支付金额": goods,
            "订单状态": "卖家已发货，等待买家确认" if shipped else "买家已付款，等待卖家发货",
            "收货人姓名": o.name,
            "收货地址": f"{prov} {city} {dist} 文三路{o.k % 500}号 (310012)",
            "联系手机": "'" + o.phone[:3] + "****" + o.phone[-4:],
            "订单创建时间": created,
            "订单付款时间": paid,
            "发货时间": sent if shipped else "",
            "宝贝标题": f"宝贝 {sku}",
            "宝贝总数量": str(sum(q for _, q, _ in o.lines)),
            "商家编码": sku,
        }
    elif channel == "jd":
        for sku, q, p in o.lines:
            yield {
                "订单号": str(310_000_000_000 + o.k),
                "商品ID": str(100_000_000_000 + SKUS.index(sku)),
                "商品名称": f"商品 {sku}",
                "订购数量": str(q),
                "支付方式": "在线支付",
                "下单时间": created,
                "京东价": _money(p),
                "订单金额": goods,
                "应付金额": goods,
                "订单状态": "等待确认收货" if shipped else "等待出库",
                "客户姓名": o.name,
                "客户地址": f"{prov}{city}{dist}文三路{o.k % 500}号",
                "联系电话": o.phone[:3] + "****" + o.phone[-4:],
                "运费金额": "0.00",
                "付款确认时间": paid,
                "订单完成时间": sent if shipped else "",
                "商家SKUID": sku,
            }
    elif channel == "pdd":
        sku, _, _ = o.lines[0]  # one row per order
        yield {
            "商品": f"商品 {sku}",
            "订单号": f"261123-{o.k:015d}",
            "订单状态": "已发货，待签收" if shipped else "待发货",
            "商品总价(元)": goods,
            "店铺优惠折扣(元)": "0.00",
            "平台优惠折扣(元)": "0.00",
            "邮费(元)": "0.00",
            "用户实付金额(元)": goods,
            "商品数量(件)": str(sum(q for _, q, _ in o.lines)),
            "收货人": o.name,
            "手机": o.phone[:3] + "****" + o.phone[-4:],
            "省": prov,
            "市": city,
            "区": dist,
            "街道": f"文三路{o.k % 500}号",
            "拼单成功时间": created,
            "发货时间": sent if shipped else "",
            "商家编码-SKU维度": sku,
            "售后状态": "无售后或售后取消",
        }
    else:
        iso = created.replace(" ", "T") + "+08:00"
        for sku, q, p in o.lines:
            yield {
                "amazon-order-id": f"113-{o.k:07d}-{o.k % 9999999:07d}",
                "purchase-date": iso,
                "last-updated-date": (sent.replace(" ", "T") + "+08:00") if shipped else iso,
                "order-status": "Shipped" if shipped else "Unshipped",
                "fulfillment-channel": "Merchant",
                "sales-channel": "Amazon.com",
                "product-name": f"Item {sku}",
                "sku": sku,
                "item-status": "Shipped" if shipped else "Unshipped",
                "quantity": str(q),
                "currency": "USD",
                "item-price": _money(q * p),
                "item-tax": "0.00",
                "shipping-price": "0.00",
                "ship-city": "SEATTLE",
                "ship-state": "WA",
                "ship-postal-code": "98109",
                "ship-country": "US",
            }


def export_rows(
    channel: str, ks: range | list[int], seed: int = 1, shipped: frozenset[int] = frozenset()
) -> Iterator[list[str]]:
    header = HEADERS[channel]
    yield header
    for k in ks:
        for row in _rows(channel, synthetic(k, seed), k in shipped):
            yield [row.get(h, "") for h in header]


def write_export(
    channel: str,
    path: Path,
    ks: range | list[int],
    seed: int = 1,
    shipped: frozenset[int] = frozenset(),
) -> Path:
    """The export file of orders ``ks``, in the format its name's suffix says (.csv/.txt/.xlsx);
    Taobao's CSV in GBK, as its back office writes it."""
    rows = export_rows(channel, ks, seed, shipped)
    if path.suffix == ".xlsx":
        from openpyxl import Workbook

        book = Workbook(write_only=True)
        sheet = book.create_sheet("orders")
        for row in rows:
            sheet.append(row)
        book.save(path)
        return path
    encoding = "gbk" if channel == "taobao" else "utf-8-sig"
    delimiter = "\t" if channel == "amazon" else ","
    with path.open("w", newline="", encoding=encoding) as f:
        csv.writer(f, delimiter=delimiter).writerows(rows)
    return path


def order_no(channel: str, k: int) -> str:
    """Order k's channel order number, as its export names it."""
    return {
        "shopify": str(6_100_000_000_000 + k),
        "taobao": str(4_100_000_000_000_000_000 + k),
        "jd": str(310_000_000_000 + k),
        "pdd": f"261123-{k:015d}",
        "amazon": f"113-{k:07d}-{k % 9999999:07d}",
    }[channel]


# -- the benchmark --------------------------------------------------------------------------------


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_import(rows_wanted: int, channel: str = "shopify") -> dict[str, Any]:
    """Read → map → admit → journal (fsynced) for a file of ``rows_wanted`` rows."""
    import asyncio

    from core.channels import ADAPTERS
    from core.exports import FORMATS, columns, orders
    from core.model import DEFAULT_LIMITS
    from streams.imports.files import open_table
    from streams.imports.jobs import CHUNK_ORDERS, _take
    from streams.ingest.admit import admit
    from streams.ingest.journal import IngestJournal

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{channel}.csv"
        # one row per order (Taobao, PDD) or per line (1.6 lines per order on average)
        n_orders = rows_wanted if channel in ("taobao", "pdd") else int(rows_wanted / 1.6)
        write_export(channel, path, range(n_orders))
        with path.open("rb") as f:
            rows_in_file = sum(1 for _ in f) - 1
        size = path.stat().st_size
        rss_before = _rss_mb()

        async def run() -> tuple[int, int, float]:
            journal = IngestJournal(Path(tmp) / "journal", 10_000_000)
            fmt = FORMATS[channel]
            table = open_table(path)
            stream = orders(fmt, columns(fmt, table.header), table.rows)
            started = time.perf_counter()
            admitted = 0
            n = 0
            while True:
                chunk = _take(stream, CHUNK_ORDERS)
                if not chunk:
                    break
                entries, _ = admit(
                    channel,
                    ADAPTERS[channel],
                    ((o.first_row, o.payload) for o in chunk),
                    DEFAULT_LIMITS,
                    0,
                )
                await journal.append(entries)
                admitted += len(entries)
                n += len(chunk)
            elapsed = time.perf_counter() - started
            await journal.close()
            return admitted, n, elapsed

        admitted, n, elapsed = asyncio.run(run())
    return {
        "channel": channel,
        "rows": rows_in_file,
        "orders": n,
        "journaled": admitted,
        "file_mb": round(size / 2**20, 1),
        "seconds": round(elapsed, 2),
        "rows_per_s": round(rows_in_file / elapsed),
        "orders_per_s": round(n / elapsed),
        "peak_rss_mb": round(_rss_mb(), 1),
        "rss_before_mb": round(rss_before, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--channel", default="shopify", choices=sorted(HEADERS))
    p.add_argument("--out", default="bench/results/import.json")
    args = p.parse_args()
    result = bench_import(args.rows, args.channel)
    print(
        f"import {result['channel']}: {result['rows']:,} rows ({result['file_mb']} MB),"
        f" {result['orders']:,} orders in {result['seconds']} s:"
        f" {result['rows_per_s']:,} rows/s, {result['orders_per_s']:,} orders/s;"
        f" peak RSS {result['peak_rss_mb']} MB (before reading {result['rss_before_mb']} MB)"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
